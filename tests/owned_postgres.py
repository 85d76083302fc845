"""A PostgreSQL cluster a test module owns: `initdb` into a temp directory and `postgres` on a
free port, optionally speaking TLS with a given server certificate and requiring a client
certificate (`hostssl ... cert`) on TLS connections, while plain connections are trusted.

    with OwnedPostgres(tls=PostgresTls(cert, key, ca)) as server:
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"

Runs as the `postgres` OS user when the tests run as root (PostgreSQL refuses root). Needs
the server binaries (`initdb`, `postgres`, `pg_ctl`) on PATH or under
/usr/lib/postgresql/*/bin; without them the test is skipped with a message saying so.
Start-up takes about a second (fsync off, small shared memory).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["OwnedPostgres", "PostgresTls"]

USER = "postgres"


@dataclass(frozen=True)
class PostgresTls:
    """The server's certificate and key, and the CA its clients' certificates come from."""

    cert: Path
    key: Path
    client_ca: Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnedPostgres:
    """A throwaway cluster (user `postgres`, database `postgres`) on 127.0.0.1:`port`."""

    def __init__(self, *, tls: PostgresTls | None = None) -> None:
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._root: Path | None = None
        self._pg_ctl: str | None = None
        self._as_postgres = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []

    def __enter__(self) -> OwnedPostgres:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("initdb/pg_ctl are not installed: cannot start a PostgreSQL of our own")
        self._pg_ctl = pg_ctl
        root = self._root = Path(tempfile.mkdtemp(prefix="sidecar-pg-owned-"))
        data = root / "data"
        if self._as_postgres:
            shutil.chown(root, USER, USER)
        init = [initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(
            [*self._as_postgres, *init],
            check=True,
            capture_output=True,
        )
        options = [
            f"-p {self.port}",
            f"-k {root}",
            f"-c listen_addresses={self.host}",
            "-c fsync=off",
            "-c shared_buffers=8MB",
            "-c max_connections=40",
        ]
        if self.tls is not None:
            options += self._configure_tls(data)
        start = [pg_ctl, "-D", str(data), "-o", " ".join(options), "-l", str(root / "log")]
        subprocess.run(
            [*self._as_postgres, *start, "-w", "-t", "30", "start"],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the owned PostgreSQL did not start: {self.log()}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        root, self._root = self._root, None
        if root is None or self._pg_ctl is None:
            return
        stop = [self._pg_ctl, "-D", str(root / "data"), "-m", "immediate", "stop"]
        subprocess.run(
            [*self._as_postgres, *stop],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)

    def log(self) -> str:
        if self._root is None:
            return ""
        path = self._root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _configure_tls(self, data: Path) -> list[str]:
        """Copy the certificate files in (readable by the server's user only) and require a
        client certificate, any signed by `client_ca`, on TLS connections (`cert`
        authentication: the certificate's subject maps to the `postgres` role), while plain
        connections stay trusted."""
        assert self.tls is not None
        for source, name in (
            (self.tls.cert, "server.crt"),
            (self.tls.key, "server.key"),
            (self.tls.client_ca, "client-ca.crt"),
        ):
            target = data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._as_postgres:
                shutil.chown(target, USER, USER)
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"hostssl all all {self.host}/32 cert clientname=DN map=any_certificate\n"
            f"hostnossl all all {self.host}/32 trust\n"
        )
        (data / "pg_ident.conf").write_text(f"any_certificate /^.*$ {USER}\n")
        for name in ("pg_hba.conf", "pg_ident.conf"):
            if self._as_postgres:
                shutil.chown(data / name, USER, USER)
        return [
            "-c ssl=on",
            "-c ssl_cert_file=server.crt",
            "-c ssl_key_file=server.key",
            "-c ssl_ca_file=client-ca.crt",
        ]

    def _answers(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=0.5).close()
        except OSError:
            return False
        return True
