"""The server span of every RPC: started when the call arrives, under the caller's
`traceparent`, current for the whole call (so the attempt spans below it are its children),
ended by the inbound layer with the call's gRPC status.

It hooks into `InboundLayer`'s per-call start, not into grpc.aio's interceptor chain (see
`inbound` for why that chain is avoided); the layer ends the span where it records the
status. Health checks are traced like any call: a probe with a traceparent asked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from sidecar.observability.call_context import CallInfo
from sidecar.observability.tracing import Tracing

__all__ = ["ServerTracing"]

Context = grpc.aio.ServicerContext[Any, Any]
Begin = Callable[[Context, str], CallInfo]


class ServerTracing:
    """Starts the server span of each call on `tracing`'s tracer."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def begin_for(self, method: str, begin: Begin) -> Begin:
        """`begin` (the layer's per-call start of `method`) followed by the server span."""
        service, _, name = method[1:].partition("/")
        # The RPC semantic conventions' attributes, built once per method.
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        start = self._tracing.start_server_span

        def begin_traced(context: Context, called: str) -> CallInfo:
            call = begin(context, called)
            span = call.span = start(method, attributes, call.traceparent)
            call.trace_id = f"{span.get_span_context().trace_id:032x}"
            return call

        return begin_traced
