"""`SSEStream`: an HTTP answer that is a Server-Sent Events stream, read in batches.

Its user supplies the open HTTP response, a parser for its event format (which turns the
events' data into its own event type) and its exception-mapping context manager; this class
owns the read loop, so every user handles the end of a stream, a cut connection and closing
the same way:

- One network read becomes one batch of events (no task switch per event).
- After the final event the rest of the body is drained before the batch is handed out, so
  the keep-alive connection goes back to the pool instead of being torn down.
- A stream that ends before the parser's end event is a `STREAM_INTERRUPTED` error.
- `aclose()` closes the HTTP response at once: an unfinished body closes the connection,
  which is how a cancelled gRPC call stops the upstream generating.

The AI providers read chat completions with it (`SSEStream[ChatEvent]`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Generic, Protocol, TypeVar

from sidecar.connections.http.errors import stream_interrupted
from sidecar.connections.http.sse import SSEDecoder

__all__ = ["EventParser", "HTTPBody", "SSEStream"]

E = TypeVar("E")


class HTTPBody(Protocol):
    """The part of an `httpx`/`httpx2` response the stream reads."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class EventParser(Protocol[E]):
    """One event format."""

    def feed(self, event: bytes, payload: bytes, batch: list[E]) -> bool:
        """Append the events of one SSE event to `batch`; True when the answer is complete.

        Raises:
            ValueError: The event is malformed or reports an upstream error.
        """
        ...

    def end_of_stream(self) -> E | None:
        """The end event for a body that stopped without an explicit end, or None if the
        answer is incomplete (the stream broke)."""
        ...


class SSEStream(Generic[E]):
    """An open upstream answer.

    Args:
        response: The streaming HTTP response (status already checked).
        parser: The event parser.
        errors: Makes the exception-mapping context manager the read loop runs in.
        upstream: Who answers, for error messages.
        metadata: What a `STREAM_INTERRUPTED` error's `ErrorInfo` carries besides
            `upstream_status` (default `{"target": upstream}`).
    """

    __slots__ = ("_errors", "_iterator", "_metadata", "_parser", "_response", "_upstream")

    def __init__(
        self,
        response: HTTPBody,
        parser: EventParser[E],
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        upstream: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._response = response
        self._parser = parser
        self._errors = errors
        self._upstream = upstream
        self._metadata = metadata
        self._iterator: AsyncIterator[list[E]] | None = None

    def __aiter__(self) -> AsyncIterator[list[E]]:
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

    def _broken(self, detail: str) -> Exception:
        return stream_interrupted(self._upstream, detail, metadata=self._metadata)

    async def _batches(self) -> AsyncIterator[list[E]]:
        decoder = SSEDecoder()
        parser = self._parser
        with self._errors():
            response = self._response
            # Without a content encoding the raw body is the body: skip the decoder layers.
            encoded = "content-encoding" in response.headers
            reads = response.aiter_bytes() if encoded else response.aiter_raw()
            async for data in reads:
                batch: list[E] = []
                done = False
                for event, payload in decoder.feed(data):
                    try:
                        done = parser.feed(event, payload, batch)
                    except ValueError as exc:
                        raise self._broken(str(exc)[:300]) from exc
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
                raise self._broken("the upstream ended the stream early")
            yield [end]
