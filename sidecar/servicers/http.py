"""HttpService: picks the api integration by target, converts proto <-> domain, and runs the
`ApiBackend` through the target's resilience pipeline. No HTTP or retry logic lives here.

- A request is checked (the no-open-proxy rules, bounds, JSON text) before the pipeline:
  a refused request sends nothing and never counts against the breaker.
- It may be retried when its method is idempotent or it carries an Idempotency-Key (an
  HTTP header; an `idempotency-key` in the call's gRPC metadata is sent as that header);
  a CallStream whose body is streamed in never is.
- The upstream's status is data: a 5xx the pipeline gave up on is answered as it came.
- CallStream opens the answer through the pipeline, then streams it outside; whatever ends
  the stream (the last chunk, an error, the caller cancelling), the upstream response is
  closed in `finally` and cancellation is re-raised.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from generated.integration.v1 import http_pb2, http_pb2_grpc
from sidecar.backends.api import ApiRequest, PreparedRequest, is_retryable
from sidecar.backends.api.http import ApiAnswer, ApiBackend, ApiStream, FailedAnswer
from sidecar.errors import InvalidArgument
from sidecar.observability.call_context import current_call
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import (
    IDEMPOTENCY_KEY_HEADER,
    Context,
    call_deadline,
    call_through,
    invalid,
    resolve,
)
from sidecar.servicers._transforms import transformed_answer, transformed_body
from sidecar.transform import Transforms

__all__ = ["HttpServicer"]

_TRACEPARENT: Final = "traceparent"
_ENVELOPE_BYTES: Final = 256 * 1024
"""Room left in a Call answer for its status and headers."""
_JSON_IN_THREAD: Final = 256 * 1024
"""JSON text longer than this is checked off the event loop."""


class HttpServicer(http_pb2_grpc.HttpServiceServicer):
    """Serve HttpService over the configured api integrations."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int) -> None:
        """`max_message_bytes` is the server's largest response message: a Call body is
        bounded by it too (RESOURCE_EXHAUSTED past it)."""
        self._integrations = integrations
        self._max_body = max(max_message_bytes - _ENVELOPE_BYTES, max_message_bytes // 2)

    def _target(self, target: str) -> Integration[Any]:
        return resolve(self._integrations, "api", target)

    async def Call(
        self, request: http_pb2.HttpServiceCallRequest, context: Context
    ) -> http_pb2.HttpServiceCallResponse:
        api = self._target(request.request.target)
        backend: ApiBackend = api.backend
        transforms = self._integrations.transforms
        prepared = await _prepare(backend, request.request, transforms, api.settings)
        retryable = is_retryable(prepared)
        deadline = call_deadline(context, self._integrations.clock)
        limit = min(backend.max_response_bytes, self._max_body)
        try:
            answer = await call_through(
                api,
                context,
                lambda: backend.call(
                    prepared, retryable=retryable, deadline=deadline, max_bytes=limit
                ),
                idempotent=retryable,
                deadline=deadline,
            )
        except FailedAnswer as failed:
            answer = failed.answer
        response_transform = request.request.response_transform or api.settings.response_transform
        if response_transform:
            answer = await transformed_answer(transforms, response_transform, answer, api.name)
        return http_pb2.HttpServiceCallResponse(
            status=answer.status,
            headers=_headers(answer.headers),
            body=answer.body,
            http_version=answer.http_version,
        )

    async def CallStream(
        self,
        request_iterator: AsyncIterator[http_pb2.HttpServiceCallStreamRequest],
        context: Context,
    ) -> AsyncIterator[http_pb2.HttpServiceCallStreamResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("head"):
            raise invalid("head", "the first message must carry the request head")
        head = first.head
        api = self._target(head.request.target)
        backend: ApiBackend = api.backend
        if head.request.response_transform:
            raise invalid("head.request.response_transform", "applies to Call only")
        if head.stream_body and (head.request.request_transform or api.settings.request_transform):
            raise invalid(
                "head.stream_body",
                "a request_transform needs the whole body in the head (it is checked before "
                "anything is sent)",
            )
        prepared = await _prepare(
            backend, head.request, self._integrations.transforms, api.settings
        )
        body = _body_chunks(request_iterator) if head.stream_body else None
        retryable = body is None and is_retryable(prepared)
        deadline = call_deadline(context, self._integrations.clock)

        def open_stream() -> Any:
            return backend.open(prepared, retryable=retryable, deadline=deadline, body=body)

        try:
            if body is None:
                stream: ApiStream = await call_through(
                    api, context, open_stream, idempotent=retryable, deadline=deadline
                )
            else:  # the body is read once: never a second attempt, whatever the metadata
                assert api.pipeline is not None
                stream = await api.pipeline.execute(
                    open_stream, deadline=deadline, idempotent=False
                )
        except FailedAnswer as failed:
            for message in _buffered(failed.answer):
                yield message
            return
        try:
            yield http_pb2.HttpServiceCallStreamResponse(
                head=http_pb2.HttpResponseHead(
                    status=stream.status,
                    headers=_headers(stream.headers),
                    http_version=stream.http_version,
                )
            )
            if head.parse_sse and stream.is_event_stream:
                async for events in stream.events():
                    for name, data in events:
                        yield http_pb2.HttpServiceCallStreamResponse(
                            event=http_pb2.HttpServerSentEvent(
                                event=name.decode(errors="replace"),
                                data=data.decode(errors="replace"),
                            )
                        )
            else:
                async for chunk in stream.chunks():
                    yield http_pb2.HttpServiceCallStreamResponse(chunk=chunk)
        finally:
            await asyncio.shield(stream.aclose())


async def _prepare(
    backend: ApiBackend, message: http_pb2.HttpRequest, transforms: Transforms, settings: Any
) -> PreparedRequest:
    """The domain request of a proto one, checked, through its request transform (the call's
    or the target's), with the call's identity added."""
    body: bytes | None = None
    is_json = False
    kind = message.WhichOneof("body")
    if kind == "body_bytes":
        body = message.body_bytes
    elif kind == "json":
        body = message.json.encode()
        is_json = True
        if len(body) <= backend.max_request_bytes:
            await _check_json(message.json)
    headers = [(header.name, header.value) for header in message.headers]
    request_transform = message.request_transform or settings.request_transform
    if request_transform and body is not None:
        body, headers = await transformed_body(
            transforms, request_transform, body, is_json, headers
        )
        is_json = False  # the output's own Content-Type header is set
    call = current_call()
    metadata = call.metadata if call is not None else ()
    key = _metadata_value(metadata, IDEMPOTENCY_KEY_HEADER)
    if key is not None and all(name.lower() != IDEMPOTENCY_KEY_HEADER for name, _ in headers):
        # The key travels with the request: a retry it allows is one the upstream can spot.
        headers.append(("Idempotency-Key", key))
    request = ApiRequest(
        method=message.method,
        path=message.path,
        headers=headers,
        query=[(parameter.name, parameter.value) for parameter in message.query],
        body=body,
        json=is_json,
    )
    request_id = call.request_id if call is not None else ""
    traceparent = _metadata_value(metadata, _TRACEPARENT)
    return backend.prepare(request, request_id=request_id, traceparent=traceparent)


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]], name: str) -> str | None:
    return next((v for k, v in metadata if k == name and isinstance(v, str)), None)


async def _check_json(text: str) -> None:
    try:
        if len(text) > _JSON_IN_THREAD:
            await asyncio.to_thread(json.loads, text)
        else:
            json.loads(text)
    except ValueError as exc:
        raise invalid("json", f"is not JSON: {str(exc)[:200]}") from exc


async def _body_chunks(
    request_iterator: AsyncIterator[http_pb2.HttpServiceCallStreamRequest],
) -> AsyncIterator[bytes]:
    """The streamed-in body: every further message's chunk, until the caller half-closes."""
    async for message in request_iterator:
        if not message.HasField("body_chunk"):
            raise InvalidArgument(
                "body_chunk: after the head, messages carry body chunks only",
                reason="INVALID_REQUEST",
                metadata={"field": "body_chunk"},
            )
        yield message.body_chunk


def _headers(pairs: tuple[tuple[str, str], ...]) -> list[http_pb2.HttpHeader]:
    return [http_pb2.HttpHeader(name=name, value=value) for name, value in pairs]


def _buffered(answer: ApiAnswer) -> list[http_pb2.HttpServiceCallStreamResponse]:
    """A 5xx answer the pipeline gave up on, as a stream: its head, then its body."""
    messages = [
        http_pb2.HttpServiceCallStreamResponse(
            head=http_pb2.HttpResponseHead(
                status=answer.status,
                headers=_headers(answer.headers),
                http_version=answer.http_version,
            )
        )
    ]
    step = 64 * 1024
    messages.extend(
        http_pb2.HttpServiceCallStreamResponse(chunk=answer.body[start : start + step])
        for start in range(0, len(answer.body), step)
    )
    return messages
