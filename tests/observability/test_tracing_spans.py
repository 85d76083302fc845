"""The tracing module on the SDK's own in-memory exporter: what a span records of an error
(redacted, like log lines), which traceparents are honoured, and sampling."""

from __future__ import annotations

import contextvars

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar.observability.tracing import Tracing, client_span, parse_traceparent

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def test_an_errors_message_is_redacted_and_its_traceback_left_out(
    exported: InMemorySpanExporter,
) -> None:
    tracing = Tracing(exported)
    tracing.install()  # client spans use the installed tracer

    def call() -> None:  # in a context of its own, as each RPC's task has
        span = tracing.start_server_span("/x.S/M", {}, CALLER)
        with pytest.raises(ConnectionError), client_span("GET", {}):
            raise ConnectionError("cannot reach postgresql://app:s3cret-pw@db:5432/x")
        tracing.end_server_span(span, "OK")

    contextvars.copy_context().run(call)
    tracing.shutdown()
    (client,) = [s for s in exported.get_finished_spans() if s.name == "GET"]
    (event,) = client.events
    assert event.name == "exception"
    assert "s3cret-pw" not in str(event.attributes["exception.message"])
    assert "exception.stacktrace" not in event.attributes


@pytest.mark.parametrize(
    "value",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_is_the_remote_parent() -> None:
    context = parse_traceparent(CALLER)
    assert context is not None
    assert (context.trace_id, context.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert context.is_remote and context.trace_flags.sampled


def test_a_callers_unsampled_trace_is_kept_but_not_recorded(
    exported: InMemorySpanExporter,
) -> None:
    tracing = Tracing(exported, sampling_ratio=1.0)
    unsampled = CALLER[:-2] + "00"
    span = contextvars.copy_context().run(tracing.start_server_span, "/x.S/M", {}, unsampled)
    assert not span.is_recording()
    assert span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    tracing.end_server_span(span, "OK")
    tracing.shutdown()
    assert exported.get_finished_spans() == ()


def test_new_traces_are_sampled_by_their_trace_id_and_dropped_ones_skip_the_sdk() -> None:
    """The root sampling decision is the ratio's (on the trace id's low 64 bits) and the SDK
    sees only the traces it keeps; dropped ones still get ids, for log lines."""

    def spans(ratio: float, count: int) -> list[tuple[bool, int]]:
        """(recording, trace id) of `count` new traces."""
        tracing = Tracing(InMemorySpanExporter(), sampling_ratio=ratio)
        made = []
        for _ in range(count):
            span = contextvars.copy_context().run(
                tracing.start_server_span, "/integration.v1.CacheService/Get", {}, None
            )
            made.append((span.is_recording(), span.get_span_context().trace_id))
            tracing.end_server_span(span, "OK")
        return made

    dropped = spans(0.0, 50)
    assert not any(recording for recording, _ in dropped)
    assert all(trace_id for _, trace_id in dropped)
    assert all(recording for recording, _ in spans(1.0, 50))
    half = spans(0.5, 2000)
    assert 800 < sum(recording for recording, _ in half) < 1200
    low_64 = (1 << 64) - 1
    assert all(recording == ((trace_id & low_64) < 1 << 63) for recording, trace_id in half)
