"""Build gRPC method handlers of the same kind as a given one (unary or streaming on either
side), so the inbound layer can wrap any handler without caring about its shape, and decode
their requests itself."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from sidecar.errors import InvalidArgument

__all__ = ["Handler", "as_writer", "behavior_of", "replace_behavior", "request_decoder"]

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]
# grpc.RpcMethodHandler is generic only in the type stubs, hence the string aliases.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def kind_of(handler: Handler) -> str:
    """The handler's kind: unary_unary, unary_stream, stream_unary or stream_stream."""
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def behavior_of(handler: Handler) -> Behavior:
    """The servicer function a handler calls."""
    behavior: Behavior = getattr(handler, kind_of(handler))
    return behavior


def replace_behavior(handler: Handler, behavior: Behavior) -> Handler:
    """A handler like `handler` (same kind and response serializer) that calls `behavior`
    with the request undecoded: bytes, or an iterator of bytes for a request stream.

    grpc.aio decodes a unary request before any handler runs and answers a bad one with
    UNKNOWN and a logged traceback; `behavior` decodes it and can say INVALID_ARGUMENT.
    """
    factory: Any = _FACTORIES[kind_of(handler)]
    result: Handler = factory(
        behavior, request_deserializer=None, response_serializer=handler.response_serializer
    )
    return result


def request_decoder(handler: Handler, method: str) -> Callable[[Any], Any]:
    """What turns the undecoded request of `handler` (see `replace_behavior`) into the one
    its behavior expects; a message that does not parse raises InvalidArgument."""
    parse = handler.request_deserializer
    if parse is None:  # the behavior takes bytes itself
        return _unchanged

    def decode(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError:
            raise InvalidArgument(
                f"the request is not a valid message for {method}", reason="INVALID_REQUEST"
            ) from None

    if not handler.request_streaming:
        return decode

    async def decode_each(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for raw in raw_requests:
            yield decode(raw)

    return decode_each


def _unchanged(request: Any) -> Any:
    return request


def as_writer(behavior: Behavior) -> Behavior:
    """A streaming behavior that writes its responses with `context.write`.

    grpc.aio drives an async-generator handler itself and, when the call is cancelled during
    a write, leaves the generator suspended: its `finally` (freeing a subscription, a
    cursor) waits for garbage collection. Written responses put the cancellation inside the
    handler, which closes the generator at once.
    """
    if not inspect.isasyncgenfunction(behavior):
        return behavior

    async def write_all(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with contextlib.aclosing(behavior(request, context)) as responses:
            async for response in responses:
                await context.write(response)

    return write_all
