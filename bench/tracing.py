"""What tracing adds to a sampled-out call, measured in-process in CPU time.

The end-to-end figure of `make bench` (a traced and an untraced sidecar, the same calls)
is the difference of two server CPU figures of a few hundred µs each, so it is only as good
as the machine is quiet. This one times exactly the per-call work that differs: the inbound
layer's start of a call and its end, traced (a tracer provider, ratio 0, the caller's
traceparent not sampled) against untraced (the same traceparent, parsed only for log lines),
in `time.process_time` over many calls, so other processes' load barely moves it.

Usage: python -m bench.tracing
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar.interceptors.inbound import InboundLayer, _begin_untraced
from sidecar.interceptors.tracing import ServerTracing
from sidecar.observability.tracing import Tracing

CALLS = 100_000
REPEATS = 5
METHOD = "/integration.v1.CacheService/Get"
# A caller's trace that it does not sample (flags 00), as in bench/load.py.
METADATA = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),)


class _Context:
    """The two things the inbound layer asks of a grpc.aio context when a call starts."""

    def invocation_metadata(self) -> Any:
        return METADATA

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


def _per_call_us(traced: bool) -> float:
    tracing = Tracing(InMemorySpanExporter(), sampling_ratio=0.0) if traced else None
    begin = (
        ServerTracing(tracing).begin_for(METHOD, InboundLayer._begin)
        if tracing is not None
        else _begin_untraced
    )
    context: Any = _Context()
    try:
        started = time.process_time()
        for _ in range(CALLS):
            call = begin(context, METHOD)
            if call.span is not None:
                Tracing.end_server_span(call.span, "OK")
        return (time.process_time() - started) / CALLS * 1e6
    finally:
        if tracing is not None:
            tracing.shutdown()


def main() -> int:
    runs = [(_per_call_us(True), _per_call_us(False)) for _ in range(REPEATS)]
    traced = statistics.median(t for t, _ in runs)
    untraced = statistics.median(u for _, u in runs)
    cost = statistics.median(t - u for t, u in runs)
    print(
        f"  tracing hooks in-process: traced {traced:.2f} us, untraced {untraced:.2f} us "
        f"per call start+end; sampled out costs {cost:+.2f} us of CPU per call (< 10)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
