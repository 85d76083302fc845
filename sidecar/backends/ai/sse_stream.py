"""`SSEChatStream`: the `ChatStream` of every provider whose answer is an HTTP event stream.

A provider supplies the open HTTP response, a parser for its event format, and its
exception-mapping context manager; this class owns the read loop, so every provider handles
the end of a stream, a cut connection and closing the same way:

- One network read becomes one batch of events (no task switch per token).
- After the final event the rest of the body is drained before the batch is handed out, so
  the keep-alive connection goes back to the pool instead of being torn down.
- A stream that ends before the provider's end event is a `STREAM_INTERRUPTED` error.
- `aclose()` closes the HTTP response at once: an unfinished body closes the connection,
  which is how a cancelled gRPC call stops the upstream generating.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from sidecar.backends.ai.base import ChatEnd, ChatEvent
from sidecar.backends.ai.errors import stream_interrupted
from sidecar.backends.ai.sse import SSEDecoder

__all__ = ["EventParser", "HTTPBody", "SSEChatStream"]


class HTTPBody(Protocol):
    """The part of an `httpx`/`httpx2` response the stream reads."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class EventParser(Protocol):
    """One provider's event format."""

    def feed(self, event: bytes, payload: bytes, batch: list[ChatEvent]) -> bool:
        """Append the events of one SSE event to `batch`; True when the answer is complete.

        Raises:
            ValueError: The event is malformed or reports an upstream error.
        """
        ...

    def end_of_stream(self) -> ChatEnd | None:
        """The end event for a body that stopped without an explicit end, or None if the
        answer is incomplete (the stream broke)."""
        ...


class SSEChatStream:
    """An open upstream answer.

    Args:
        response: The streaming HTTP response (status already checked).
        parser: The provider's event parser.
        errors: Makes the provider's exception-mapping context manager.
        provider: The provider kind, for error messages.
    """

    __slots__ = ("_errors", "_iterator", "_parser", "_provider", "_response")

    def __init__(
        self,
        response: HTTPBody,
        parser: EventParser,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        provider: str,
    ) -> None:
        self._response = response
        self._parser = parser
        self._errors = errors
        self._provider = provider
        self._iterator: AsyncIterator[list[ChatEvent]] | None = None

    def __aiter__(self) -> AsyncIterator[list[ChatEvent]]:
        if self._iterator is None:
            self._iterator = self._batches()
        return self._iterator

    async def aclose(self) -> None:
        """Stop reading and close the upstream response."""
        iterator = self._iterator
        try:
            if iterator is not None:
                await iterator.aclose()  # type: ignore[attr-defined]
        finally:
            await self._response.aclose()

    async def _batches(self) -> AsyncIterator[list[ChatEvent]]:
        decoder = SSEDecoder()
        parser = self._parser
        with self._errors():
            response = self._response
            # Without a content encoding the raw body is the body: skip the decoder layers.
            encoded = "content-encoding" in response.headers
            reads = response.aiter_bytes() if encoded else response.aiter_raw()
            async for data in reads:
                batch: list[ChatEvent] = []
                done = False
                for event, payload in decoder.feed(data):
                    try:
                        done = parser.feed(event, payload, batch)
                    except ValueError as exc:
                        raise stream_interrupted(self._provider, str(exc)[:300]) from exc
                    if done:
                        break
                if done:
                    async for _ in reads:  # the terminating chunk: frees the connection
                        pass
                    yield batch
                    return
                if batch:
                    yield batch
            end = parser.end_of_stream()
            if end is None:
                raise stream_interrupted(self._provider, "the upstream ended the stream early")
            yield [end]
