"""OpenTelemetry traces: a server span per RPC, a client span per upstream attempt.

The caller's `traceparent` (gRPC metadata) is the parent of the server span; each attempt a
pipeline makes (so every retry) and each HTTP request an AI deployment sends (so every
fallback) is a client span under it, and HTTP upstreams receive the attempt's own
`traceparent`. Spans leave in batches over OTLP (gRPC or HTTP), sampled
ParentBased(TraceIdRatio): a caller's sampled flag decides for its trace, the ratio for
traces the sidecar starts.

Cost: with no `tracing:` configured there is no tracer provider at all and the inbound layer
skips every call here. A call its caller did not sample pays for parsing its traceparent and
a context switch (~2.5 µs); one the ratio drops, for the SDK's sampler and a non-recording
span (~4 µs); no client span is made under a span that does not record (`make bench`:
"tracing, sampled out").

One tracer serves the process (`install`): the HTTP client code that sends AI requests
reaches it without being handed it. A second server in the same process (tests) takes over
from the first.

Usage:

    tracing = Tracing(exporter, sampling_ratio=0.1)
    tracing.install()
    span = tracing.start_server_span("/integration.v1.CacheService/Get", traceparent)
    ...
    tracing.end_server_span(span, "OK")
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from sidecar.observability.call_context import current_call
from sidecar.observability.logging import redact_line
from sidecar.resilience import current_attempt

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

__all__ = [
    "GRPC_STATUS_CODES",
    "TRACEPARENT_HEADER",
    "Tracing",
    "annotate_span",
    "attempt_attributes",
    "client_span",
    "current_traceparent",
    "parse_traceparent",
    "record_error",
    "recorded_traceparent",
    "recording_span",
    "trace_id_of",
]

T = TypeVar("T")
TRACEPARENT_HEADER: Final = "traceparent"
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
GRPC_STATUS_CODES: Final = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
# Server errors by the RPC semantic conventions: the caller's own mistakes leave the span
# unset, as they are not the server's failure.
_SERVER_ERRORS: Final = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class _Installed:
    """The tracer client spans use (see `Tracing.install`)."""

    tracer: trace.Tracer | None = None


_installed = _Installed()


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a W3C `traceparent`, or None when it is not a valid one
    (then the sidecar starts a trace of its own)."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match[1] == "ff":
        return None
    trace_id, span_id = int(match[2], 16), int(match[3], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[4], 16) & 1)
    )


def trace_id_of(traceparent: str) -> str:
    """The trace id of a valid `traceparent` (for log lines when tracing is off), or ""."""
    context = parse_traceparent(traceparent)
    return f"{context.trace_id:032x}" if context is not None else ""


def annotate_span(attributes: Mapping[str, Any]) -> None:
    """Add `attributes` to the current span if it records: an attempt learning its HTTP
    method, URL and status once its request is built and answered, or a server span its
    call's destination (a pub/sub channel)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def recording_span() -> Span | None:
    """The current span if it records (an attempt of a traced call), else None."""
    span = trace.get_current_span()
    return span if span.is_recording() else None


def recorded_traceparent() -> str | None:
    """`current_traceparent()` when the current span records (an attempt of a traced call,
    whose upstream request should name it), else None."""
    span = trace.get_current_span()
    return current_traceparent() if span.is_recording() else None


def current_traceparent() -> str | None:
    """The `traceparent` naming the current span (the server span, or an attempt's), or None
    when no span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class Tracing:
    """A tracer provider: ParentBased(TraceIdRatio(`sampling_ratio`)) sampling, finished
    spans batched to `exporter` (an OTLP span exporter) at most `export_delay` s late."""

    def __init__(
        self,
        exporter: Any,
        *,
        sampling_ratio: float = 1.0,
        service_name: str = "integration-sidecar",
        export_delay: float = 2.0,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        ratio = TraceIdRatioBased(sampling_ratio)
        # The root spans' sampling decision, taken here as TraceIdRatioBased takes it (on the
        # trace id's low 64 bits): a root trace sampled out never enters the SDK.
        self._root_bound: int = ratio.bound
        self._preset = _PresetTraceIds(RandomIdGenerator())
        self.provider = TracerProvider(
            sampler=ParentBased(ratio),
            resource=Resource.create({"service.name": service_name}),
            id_generator=cast("IdGenerator", self._preset),  # the SDK's protocol, duck-typed
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=export_delay * 1000)
        )
        self.tracer = self.provider.get_tracer("integration-sidecar")

    def install(self) -> None:
        """Make this the tracer of `client_span` (code that is not handed one)."""
        _installed.tracer = self.tracer

    def shutdown(self) -> None:
        """Export what is waiting and stop; client spans stop if this tracer made them."""
        if _installed.tracer is self.tracer:
            _installed.tracer = None
        self.provider.shutdown()

    def start_server_span(
        self, method: str, attributes: Mapping[str, Any], traceparent: str | None
    ) -> Span:
        """Start the server span of RPC `method` under the caller's `traceparent`, and make
        it the current span of the call's task."""
        remote = parse_traceparent(traceparent) if traceparent is not None else None
        span: Span
        if remote is not None and not remote.trace_flags.sampled:
            # ParentBased drops it: skip the SDK (its sampler and span object cost ~3 µs).
            # The call keeps the caller's ids, for log lines and pub/sub messages.
            span = NonRecordingSpan(remote)
        elif remote is None and (trace_id := _new_trace_id()) & _LOW_64 >= self._root_bound:
            # A new trace the ratio drops: its ids, for log lines, without the SDK.
            span = NonRecordingSpan(
                SpanContext(trace_id, random.getrandbits(64) or 1, is_remote=False)
            )
        elif remote is None:
            self._preset.next_trace_id = trace_id  # the id the decision above was taken on
            span = self.tracer.start_span(method[1:], kind=SpanKind.SERVER, attributes=attributes)
        else:
            parent = trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None
            span = self.tracer.start_span(
                method[1:], context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
        # Each RPC runs in its own task: the span stays current until the task ends.
        otel_context.attach(trace.set_span_in_context(span))
        return span

    @staticmethod
    def end_server_span(span: Span, status: str, error: BaseException | None = None) -> None:
        """End the server span with the call's gRPC status (a name such as "OK")."""
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", GRPC_STATUS_CODES.get(status, 2))
            if status in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, status))
                if error is not None:
                    record_error(span, error)
        span.end()

    def attempt_wrapper(
        self, name: str, attributes: Mapping[str, Any], operation_key: str | None
    ) -> Callable[[Callable[[], Awaitable[T]]], Callable[[], Awaitable[T]]]:
        """What a pipeline wraps each call's operation in: every attempt a client span
        `name` with `attributes`, plus the RPC method under `operation_key` (db.operation,
        messaging.operation, ...) and the attempt's number. Under a span that does not
        record (sampled out, or no server span), the operation is left as it is."""

        tracer = self.tracer

        def wrap(operation: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
            if not trace.get_current_span().is_recording():
                return operation
            call = current_call()
            method = call.method.rsplit("/", 1)[-1] if call is not None else ""
            span_attributes = dict(attributes)
            if operation_key is not None and method:
                span_attributes[operation_key] = method

            async def attempt() -> T:
                span_attributes["sidecar.attempt"] = current_attempt.get()
                with _span(tracer, f"{method} {name}".strip(), span_attributes):
                    return await operation()

            return attempt

        return wrap


@contextmanager
def client_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Span | None]:
    """A client span around one upstream request, current inside the block; None (and
    nothing made) when tracing is off or the call is not recorded."""
    tracer = _installed.tracer
    if tracer is None or not trace.get_current_span().is_recording():
        yield None
        return
    with _span(tracer, name, attributes) as span:
        yield span


@contextmanager
def _span(tracer: trace.Tracer, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def record_error(span: Span, error: BaseException) -> None:
    """The semantic conventions' `exception` event, its message redacted as log lines are
    (a driver's error may quote a DSN) and without the traceback (the logs have it)."""
    span.add_event(
        "exception",
        {
            "exception.type": type(error).__qualname__,
            "exception.message": redact_line(str(error)),
        },
    )


# Integration type -> (attributes, the key that names the operation): the semantic
# conventions' system of each family; the backend names the system.
_DB_SYSTEMS: Final = {"postgres": "postgresql", "redis": "redis", "sqlite": "sqlite"}


def attempt_attributes(
    type_name: str, backend: str, integration: str
) -> tuple[dict[str, Any], str | None]:
    """The attributes of an attempt span of `integration` (`type_name`/`backend`), and the
    attribute that names the RPC's operation."""
    base: dict[str, Any] = {"sidecar.integration": integration, "sidecar.backend": backend}
    if type_name in ("cache", "sql"):
        base["db.system"] = _DB_SYSTEMS.get(backend, backend)
        return base, "db.operation"
    if type_name in ("pubsub", "queue"):
        base["messaging.system"] = "aws_sqs" if backend == "sqs" else backend
        return base, "messaging.operation"
    if type_name in ("objectstore", "cloud"):
        base["rpc.system"] = "aws-api" if backend in ("s3", "aws") else backend
        return base, "rpc.method"
    # HTTP families: the request itself adds http.* (`annotate_span`), once built.
    return base, None


_LOW_64: Final = (1 << 64) - 1


def _new_trace_id() -> int:
    return random.getrandbits(128) or 1


class _PresetTraceIds:
    """The SDK's id generator, except that a root span's trace id can be chosen beforehand
    (the one the sidecar's own sampling decision was taken on)."""

    def __init__(self, ids: Any) -> None:
        self._ids = ids
        self.next_trace_id: int | None = None

    def generate_span_id(self) -> int:
        span_id: int = self._ids.generate_span_id()
        return span_id

    def is_trace_id_random(self) -> bool:
        return True  # a preset id is random too: drawn by `_new_trace_id`

    def generate_trace_id(self) -> int:
        preset, self.next_trace_id = self.next_trace_id, None
        if preset is not None:
            return preset
        trace_id: int = self._ids.generate_trace_id()
        return trace_id
