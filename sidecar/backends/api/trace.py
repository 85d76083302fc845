"""The W3C Trace Context header every upstream request carries: the caller's `traceparent`
when it is a valid one, else a new trace (so the upstream's logs can still be joined to
the sidecar's request id).

    traceparent_for("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")  # kept
    traceparent_for(None)        # "00-<32 new hex>-<16 new hex>-00"
"""

from __future__ import annotations

import secrets

from sidecar.observability.tracing import parse_traceparent

__all__ = ["new_traceparent", "traceparent_for", "valid_traceparent"]


def valid_traceparent(value: str) -> bool:
    """Version 00 syntax (lower-case hex), a version other than ff, non-zero ids."""
    return parse_traceparent(value) is not None


def new_traceparent() -> str:
    """A new trace, not sampled (the sidecar records no span of its own here)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def traceparent_for(incoming: str | None) -> str:
    """The traceparent to send: the incoming one when valid, else a new one."""
    if incoming is not None and valid_traceparent(incoming):
        return incoming
    return new_traceparent()
