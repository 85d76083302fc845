"""Optional bearer-token auth: with tokens configured, every RPC but health checks must carry
`authorization: Bearer <token>` matching one of them (constant-time comparison)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from sidecar.errors import Unauthenticated

__all__ = ["BearerAuth"]

Metadata = Sequence[tuple[str, str | bytes]]


class BearerAuth:
    """Check the bearer token of a call; a missing or wrong one is UNAUTHENTICATED.

    Args:
        tokens: the accepted tokens (from the environment, never from the config text).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens or any(not token for token in tokens):
            raise ValueError("tokens must be a non-empty list of non-empty strings")
        self._tokens = [token.encode() for token in tokens]

    def check(self, metadata: Metadata) -> None:
        """Raise Unauthenticated unless `metadata` carries an accepted bearer token."""
        if not self._authorized(metadata):
            raise Unauthenticated("missing or invalid bearer token", reason="UNAUTHENTICATED")

    def _authorized(self, metadata: Metadata) -> bool:
        for key, value in metadata:
            if key != "authorization" or not isinstance(value, str):
                continue
            scheme, _, presented = value.partition(" ")
            if scheme.lower() != "bearer":
                return False
            candidate = presented.strip().encode()
            # Compare against every token so timing does not reveal which one matched.
            matched = False
            for token in self._tokens:
                matched |= hmac.compare_digest(candidate, token)
            return matched
        return False
