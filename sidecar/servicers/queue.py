"""QueueService: validates requests, picks the queue by target, and runs the `QueueBackend`
through the target's resilience pipeline. No retry, breaker or SQS knowledge lives here.

- Send and SendBatch are retried only when the call carries an idempotency key (a retry
  could enqueue a message twice); Ack and ChangeVisibility are idempotent enough to retry.
- Receive is a stream of fetches, each one long poll through the pipeline, shorter than
  the breaker's slow-call duration (9 s by default: see `_longest_poll`) and bounded by the
  caller's deadline (the stream ends with OK when under two seconds of it are left). Each
  stream holds at most `max_in_flight` delivered, unacked messages (`_queue_flow`); it
  writes with `context.write`, so a reader that stops reading holds the stream at the
  write, fetching nothing more. When the client cancels, the fetch under way is cancelled
  with it; messages delivered but not acked come back after their visibility timeout.
"""

from __future__ import annotations

from typing import Any, Final

from generated.integration.v1 import queue_pb2, queue_pb2_grpc
from sidecar.backends.queue import QueueBackend, ReceivedMessage
from sidecar.errors import SidecarError
from sidecar.runtime import Integration, Integrations
from sidecar.servicers import _queue_values as values
from sidecar.servicers._common import Context, call_through, resolve
from sidecar.servicers._queue_flow import Stopped, Windows

__all__ = ["QueueServicer"]

_DEADLINE_MARGIN: Final = 1.0
"""A fetch starts only with this much more of the caller's deadline left than it may wait."""


class QueueServicer(queue_pb2_grpc.QueueServiceServicer):
    """Serve QueueService over the configured queue integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations
        self._windows = Windows(integrations.clock)

    def _target(self, target: str) -> tuple[Integration[Any], QueueBackend]:
        queue = resolve(self._integrations, "queue", target)
        backend: QueueBackend = queue.backend
        return queue, backend

    async def Send(
        self, request: queue_pb2.SendRequest, context: Context
    ) -> queue_pb2.SendResponse:
        queue, backend = self._target(request.target)
        message = values.outgoing(request, backend.fifo)
        if request.schema:  # checked before anything is sent
            await self._integrations.transforms.check(request.schema, request.body, field="body")
        sent = await call_through(queue, context, lambda: backend.send(message), idempotent=False)
        return queue_pb2.SendResponse(
            message_id=sent.message_id, sequence_number=sent.sequence_number
        )

    async def SendBatch(
        self, request: queue_pb2.SendBatchRequest, context: Context
    ) -> queue_pb2.SendBatchResponse:
        queue, backend = self._target(request.target)
        messages = values.batch(request.entries, backend.fifo)
        if request.schema:  # every body checked before anything is sent
            for i, entry in enumerate(request.entries):
                await self._integrations.transforms.check(
                    request.schema, entry.body, field=f"entries[{i}].body"
                )
        outcomes = await call_through(
            queue, context, lambda: backend.send_batch(messages), idempotent=False
        )
        results = []
        for entry, outcome in zip(request.entries, outcomes, strict=True):
            if isinstance(outcome, SidecarError):
                result = queue_pb2.SendBatchResult(id=entry.id, error=values.entry_error(outcome))
            else:
                result = queue_pb2.SendBatchResult(
                    id=entry.id,
                    message_id=outcome.message_id,
                    sequence_number=outcome.sequence_number,
                )
            results.append(result)
        return queue_pb2.SendBatchResponse(results=results)

    async def Receive(  # type: ignore[override]  # write-style streaming handler
        self, request: queue_pb2.ReceiveRequest, context: Context
    ) -> None:
        queue, backend = self._target(request.target)
        limit = values.in_flight(request.max_in_flight)
        visibility = values.visibility(request)
        wait = min(values.wait_time(request), _longest_poll(queue))
        wanted = values.max_messages(request.max_messages)
        if visibility is None:
            visibility = await call_through(queue, context, backend.default_visibility_timeout)
        window = self._windows.open(limit)
        delivered = 0
        try:
            while not wanted or delivered < wanted:
                await window.wait_for_room()
                poll = _poll_time(context, wait)
                if poll is None:
                    return  # the caller's deadline is near: end with OK
                count = min(window.room(), wanted - delivered if wanted else limit)
                messages = await window.fetch(
                    self._fetch(queue, backend, context, count, poll, visibility)
                )
                for received in messages:
                    window.add(received.receipt_handle, visibility)
                    await context.write(queue_pb2.ReceiveResponse(message=values.message(received)))
                    delivered += 1
        except Stopped:
            return  # the server is shutting down: end with OK
        finally:
            self._windows.close(window)

    @staticmethod
    async def _fetch(
        queue: Integration[Any],
        backend: QueueBackend,
        context: Context,
        count: int,
        wait: float,
        visibility: float,
    ) -> list[ReceivedMessage]:
        """One long poll through the queue's pipeline."""
        return await call_through(
            queue,
            context,
            lambda: backend.receive(count, wait=wait, visibility_timeout=visibility),
        )

    async def Ack(self, request: queue_pb2.AckRequest, context: Context) -> queue_pb2.AckResponse:
        queue, backend = self._target(request.target)
        handles = values.receipt_handles(request.receipt_handles)
        outcomes = await call_through(queue, context, lambda: backend.ack(handles))
        failures = []
        done = []
        for handle, outcome in zip(handles, outcomes, strict=True):
            if outcome is None:
                done.append(handle)
                continue
            if outcome.reason == "RECEIPT_INVALID":
                done.append(handle)  # no longer in flight here either way
            failures.append(
                queue_pb2.AckFailure(receipt_handle=handle, error=values.entry_error(outcome))
            )
        self._windows.released(done)
        return queue_pb2.AckResponse(acknowledged=len(handles) - len(failures), failures=failures)

    async def ChangeVisibility(
        self, request: queue_pb2.ChangeVisibilityRequest, context: Context
    ) -> queue_pb2.ChangeVisibilityResponse:
        queue, backend = self._target(request.target)
        handle = values.receipt_handle(request.receipt_handle)
        seconds = values.visibility(request) or 0.0
        try:
            await call_through(queue, context, lambda: backend.change_visibility(handle, seconds))
        except SidecarError as exc:
            if exc.reason == "RECEIPT_INVALID":
                self._windows.released([handle])
            raise
        if seconds:
            self._windows.extended(handle, seconds)
        else:
            self._windows.released([handle])
        return queue_pb2.ChangeVisibilityResponse()

    async def end_streams(self) -> None:
        """End every open Receive stream with OK (used at shutdown); messages delivered and
        not acked come back after their visibility timeout."""
        self._windows.stop_all()


def _longest_poll(queue: Integration[Any]) -> float:
    """How long one fetch may wait: under the breaker's slow-call duration (less a second),
    so the empty polls of an idle queue are not slow calls that open it, and a stream
    cancelled mid-poll is not counted as a failure; at least 1 s, at most 20 s."""
    pipeline = queue.pipeline
    breaker = pipeline.circuit_breaker if pipeline is not None else None
    slow = breaker.options.slow_call_duration if breaker is not None else None
    if slow is None:
        return values.LONGEST_WAIT
    return max(min(values.LONGEST_WAIT, slow - 1.0), 1.0)


def _poll_time(context: Context, wait: float) -> float | None:
    """How long the next fetch may wait: `wait`, less what the caller's deadline leaves;
    None when that is under a second."""
    remaining = context.time_remaining()
    if remaining is None:
        return wait
    if remaining - _DEADLINE_MARGIN < 1.0:  # SQS waits whole seconds: 0 would spin
        return None
    return min(wait, remaining - _DEADLINE_MARGIN)
