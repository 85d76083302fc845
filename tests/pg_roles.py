"""Throwaway PostgreSQL login roles for tests: `async with login_role(admin_dsn) as name:`.

Roles are cluster-wide, so each gets a random name and is dropped at the end (with every
privilege it was granted in the database). The role may use and create tables in the
database's `public` schema, including tables the admin creates later, and nothing more
unless `grants` says so (for example `("pg_read_server_files",)`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence

import asyncpg

__all__ = ["login_role", "with_user"]


@contextlib.asynccontextmanager
async def login_role(admin_dsn: str, *, grants: Sequence[str] = ()) -> AsyncIterator[str]:
    """A new LOGIN role (no superuser) in the cluster of `admin_dsn`; yields its name."""
    name = f"sidecar_role_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN")
        for granted in grants:
            await conn.execute(f"GRANT {granted} TO {name}")
        await conn.execute(
            f"GRANT USAGE, CREATE ON SCHEMA public TO {name};"
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name};"
            f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name};"
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {name};"
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {name}"
        )
        yield name
    finally:
        try:
            await conn.execute(f"DROP OWNED BY {name}; DROP ROLE IF EXISTS {name}")
        finally:
            await conn.close()


def with_user(dsn: str, user: str) -> str:
    """`dsn` (postgresql://user@host:port/db) with another user."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{user}@{rest.split('@', 1)[1]}"
