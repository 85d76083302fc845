"""Optional bearer-token auth: with tokens configured, every RPC but health checks must carry
`authorization: Bearer <token>` matching one of them (constant-time comparison)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import grpc

from sidecar.errors import Unauthenticated
from sidecar.interceptors._handlers import Continuation, Handler, rejecting_handler

__all__ = ["BearerAuthInterceptor"]

_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _unauthenticated() -> BaseException:
    return Unauthenticated("missing or invalid bearer token", reason="UNAUTHENTICATED")


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Reject calls without a valid bearer token with UNAUTHENTICATED.

    Args:
        tokens: the accepted tokens (from the environment, never from the config text).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens or any(not token for token in tokens):
            raise ValueError("tokens must be a non-empty list of non-empty strings")
        self._tokens = [token.encode() for token in tokens]

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return rejecting_handler(handler, _unauthenticated)

    def _authorized(self, metadata: Sequence[tuple[str, str | bytes]]) -> bool:
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
