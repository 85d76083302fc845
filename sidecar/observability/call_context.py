"""Per-RPC data carried in a contextvar, so the servicer can tell the interceptor which
target served the call without threading it through every signature."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["CallInfo", "current_call"]


@dataclass(slots=True)
class CallInfo:
    """What the access log and metrics need to know about the RPC in progress."""

    request_id: str
    method: str
    started: float
    """`time.perf_counter()` when the call arrived."""
    metadata: Sequence[tuple[str, str | bytes]] = ()
    """The call's invocation metadata, read once."""
    target: str = ""
    traceparent: str | None = None
    """The caller's `traceparent` metadata, as sent."""
    trace_id: str = ""
    """32 hex digits: the call's trace (its server span's, else the caller's traceparent's);
    "" when neither exists. Every log line of the call carries it."""
    span: Any = None
    """The server span while tracing is on (an OpenTelemetry Span), else None."""


_current: ContextVar[CallInfo | None] = ContextVar("sidecar_call", default=None)


def current_call() -> CallInfo | None:
    """The CallInfo of the RPC running in this task, if any."""
    return _current.get()


def set_current_call(info: CallInfo) -> None:
    """Bind `info` to the running task (each RPC runs in its own task)."""
    _current.set(info)


def note_target(target: str) -> None:
    """Record the integration serving this call (used by servicers)."""
    info = _current.get()
    if info is not None:
        info.target = target
