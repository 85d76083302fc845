"""Helpers every servicer uses: the caller's deadline, idempotency keys, running an
operation through the target's pipeline, and request validation with clear errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import duration_pb2

from sidecar.errors import InvalidArgument
from sidecar.observability.call_context import current_call, note_target
from sidecar.resilience import Answered, Clock, Deadline
from sidecar.runtime import Integration, Integrations
from sidecar.runtime.permissions import permit_target

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "call_through",
    "invalid",
    "positive_ttl",
    "require_name",
    "resolve",
    "serve_target",
]

T = TypeVar("T")
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
Context = grpc.aio.ServicerContext[Any, Any]


def resolve(integrations: Integrations, type_name: str, target: str) -> Integration[Any]:
    """The integration serving this call, noted for the access log and metrics."""
    integration = integrations.resolve(type_name, target)
    serve_target(integration.name)
    return integration


def serve_target(name: str) -> None:
    """Note `name` (a resolved target) as serving this call, once the caller's permissions
    allow it: every servicer resolves targets through here (PERMISSION_DENIED if not)."""
    permit_target(name)
    note_target(name)


def call_deadline(context: Context, clock: Clock, *, margin: float = 0.0) -> Deadline | None:
    """The one deadline of a call: the caller's gRPC deadline on the sidecar's `clock`,
    less `margin` (at most a tenth of the time left) so the sidecar answers before the
    caller's own timer fires. None when the caller set no deadline."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return Deadline.after(max(remaining - min(margin, remaining * 0.1), 0.0), clock)


async def call_through(
    integration: Integration[Any],
    context: Context,
    operation: Callable[[], Awaitable[T]],
    *,
    idempotent: bool = True,
    deadline: Deadline | None = None,
    may_answer_locally: bool = False,
) -> T:
    """Run `operation` through the integration's pipeline within the caller's deadline
    (`deadline`, when the servicer already made it; else made here, once).

    A non-idempotent operation is retried only when the caller sent an idempotency key.
    With `may_answer_locally`, an operation whose backend answers from memory (an
    `Answered`, say a near cache's held value) returns that answer without the pipeline: no
    upstream call was made, so there is nothing to guard. The operation must then be cheap
    and free of effects until awaited (a coroutine function's call is).
    """
    pipeline = integration.pipeline
    if pipeline is None:  # an AI service: its calls run through sidecar.ai, never through here
        raise TypeError(f"integration {integration.name!r} has no unary pipeline")
    if may_answer_locally:
        first: object = operation()
        if type(first) is Answered:
            return cast(T, first.value)
        if isinstance(first, Coroutine):
            first.close()  # never started: the pipeline makes its own attempts
    if deadline is None:
        deadline = call_deadline(context, pipeline.clock)
    if not idempotent:
        idempotent = _has_idempotency_key(context)
    return await pipeline.execute(operation, deadline=deadline, idempotent=idempotent)


def _has_idempotency_key(context: Context) -> bool:
    call = current_call()  # the inbound layer already read the metadata
    metadata = call.metadata if call is not None else context.invocation_metadata() or ()
    return any(key == IDEMPOTENCY_KEY_HEADER for key, _ in metadata)


def invalid(field: str, message: str, reason: str = "INVALID_REQUEST") -> InvalidArgument:
    """An INVALID_ARGUMENT naming the offending field (sent as BadRequest and ErrorInfo)."""
    return InvalidArgument(f"{field}: {message}", reason=reason, metadata={"field": field})


def require_name(value: str, field: str, max_length: int) -> str:
    """A non-empty key or channel of at most `max_length` bytes."""
    if not value:
        raise invalid(field, "must not be empty")
    if len(value) > max_length and len(value.encode()) > max_length:
        raise invalid(field, f"must be at most {max_length} bytes")
    return value


def positive_ttl(message: Any, field: str = "ttl", *, required: bool = False) -> float | None:
    """Seconds of the `ttl` Duration of `message`; unset is None (no expiry).

    `field` is the path named in errors (`operations[2].set.ttl` inside a batch).
    """
    if not message.HasField("ttl"):
        if required:
            raise invalid(field, "must be set")
        return None
    duration: duration_pb2.Duration = message.ttl
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds <= 0:
        raise invalid(field, "must be positive")
    return seconds
