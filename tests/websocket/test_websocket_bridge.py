"""WebSocketService.Connect against a real WebSocket server: frames both ways in order,
close codes carried, back-pressure, and the no-open-proxy rules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc
import pytest
from support import error_info

from generated.integration.v1 import websocket_pb2, websocket_pb2_grpc
from sidecar.testing import serve_for_test

from .conftest import EchoServer, config_for

Request = websocket_pb2.WebSocketServiceConnectRequest


def _open(path: str = "", **fields: Any) -> Request:
    return Request(open=websocket_pb2.WebSocketOpen(target="ws", path=path, **fields))


def _text(text: str) -> Request:
    return Request(frame=websocket_pb2.WebSocketFrame(text=text))


def _binary(data: bytes) -> Request:
    return Request(frame=websocket_pb2.WebSocketFrame(binary=data))


async def _refused(stub: websocket_pb2_grpc.WebSocketServiceStub, *requests: Request) -> Any:
    call = stub.Connect()
    for request in requests:
        await call.write(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    call.cancel()
    return caught.value


async def test_1000_text_and_binary_frames_echo_in_order(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer
) -> None:
    call = stub.Connect()
    await call.write(_open("/echo"))
    opened = await call.read()
    assert opened.WhichOneof("kind") == "opened"
    sent: list[str | bytes] = [
        f"text {i}" if i % 2 == 0 else i.to_bytes(4, "big") * 3 for i in range(1000)
    ]

    async def write_all() -> None:
        for item in sent:
            await call.write(_text(item) if isinstance(item, str) else _binary(item))
        await call.done_writing()

    writer = asyncio.create_task(write_all())
    received: list[str | bytes] = []
    while len(received) < len(sent):
        message = await call.read()
        frame = message.frame
        received.append(frame.text if frame.WhichOneof("data") == "text" else frame.binary)
    await writer
    assert received == sent
    closed = await call.read()
    assert closed.closed.code == 1000
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert ws_server.requests[0][0] == "/base/echo"


async def test_upstream_closing_with_1011_ends_the_stream_with_that_code(
    stub: websocket_pb2_grpc.WebSocketServiceStub,
) -> None:
    call = stub.Connect()
    await call.write(_open("/close1011"))
    assert (await call.read()).WhichOneof("kind") == "opened"
    closed = await call.read()
    assert (closed.closed.code, closed.closed.reason) == (1011, "boom")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info.reason == "STREAM_INTERRUPTED"
    assert (info.metadata["close_code"], info.metadata["close_reason"]) == ("1011", "boom")


async def test_a_caller_that_stops_reading_holds_the_upstream(ws_server: EchoServer) -> None:
    """Back-pressure: with the caller not reading, the sidecar stops reading the upstream,
    so the upstream can send only what the buffers on the way hold (a bounded amount),
    not the whole 96 MiB; once the caller reads again, every frame arrives in order."""
    count, size = 1500, 64 * 1024
    async with (
        serve_for_test(config_for(ws_server.port, buffered_frames=8)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = websocket_pb2_grpc.WebSocketServiceStub(channel)
        call = stub.Connect()
        await call.write(_open(f"/flood?count={count}&size={size}"))
        assert (await call.read()).WhichOneof("kind") == "opened"
        # Wait until the upstream makes no progress for half a second (bounded loop).
        last, still_since, give_up = -1, time.monotonic(), time.monotonic() + 20
        while time.monotonic() < give_up:
            await asyncio.sleep(0.1)
            if ws_server.flood_sent != last:
                last, still_since = ws_server.flood_sent, time.monotonic()
            elif time.monotonic() - still_since > 0.5:
                break
        held = ws_server.flood_sent
        assert not ws_server.flood_done.is_set()
        # What the socket buffers, the bridge's 8 frames and gRPC's flow-control window
        # hold: far below the 1500 frames offered.
        assert held < 600, held
        numbers = []
        while True:
            message = await call.read()
            if message.WhichOneof("kind") != "frame":
                break
            numbers.append(int.from_bytes(message.frame.binary[:4], "big"))
        assert numbers == list(range(count))
        assert message.closed.code == 1000
        print(f"upstream frames sent while the caller did not read: {held} of {count}")


async def test_the_caller_closes_with_its_code(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer
) -> None:
    call = stub.Connect()
    await call.write(_open("/echo"))
    await call.read()
    await call.write(Request(close=websocket_pb2.WebSocketClose(code=4000, reason="done")))
    closed = await call.read()
    assert closed.closed.code == 4000
    assert await call.code() == grpc.StatusCode.OK
    for _ in range(50):
        if ws_server.closed_codes:
            break
        await asyncio.sleep(0.05)
    assert ws_server.closed_codes == [4000]


async def test_a_caller_that_cancels_closes_the_upstream_with_1001(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer
) -> None:
    call = stub.Connect()
    await call.write(_open("/echo"))
    await call.read()
    call.cancel()
    for _ in range(100):
        if ws_server.closed_codes:
            break
        await asyncio.sleep(0.05)
    assert ws_server.closed_codes == [1001]


async def test_an_allowed_header_and_a_query_reach_the_upstream(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer
) -> None:
    call = stub.Connect()
    await call.write(_open("/echo?room=7", headers={"X-Tenant": "acme"}))
    await call.read()
    await call.done_writing()
    assert (await call.read()).closed.code == 1000
    path, headers = ws_server.requests[0]
    assert path == "/base/echo?room=7"
    assert headers["x-tenant"] == "acme"


@pytest.mark.parametrize(
    "path",
    [
        "ws://elsewhere.example/echo",
        "//elsewhere.example/echo",
        "echo",
        "/a/../../echo",
        "/a/%2e%2e/echo",
        "/a/%2E./echo",
        "/a%2fb",
        "/echo\r\nHost: evil",
        "/echo\n",
        "/ec ho",
        "/echo#x",
        "/a\\b",
    ],
)
async def test_a_path_that_could_leave_the_url_is_refused(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer, path: str
) -> None:
    error = await _refused(stub, _open(path))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == "path"
    assert ws_server.requests == []


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"x-other": "1"}, "not allowed"),
        ({"host": "evil.example"}, "handshake"),
        ({"sec-websocket-protocol": "x"}, "handshake"),
        ({"x-tenant": "a\r\nx-evil: 1"}, "CR"),
    ],
)
async def test_headers_outside_the_allow_list_are_refused(
    stub: websocket_pb2_grpc.WebSocketServiceStub,
    ws_server: EchoServer,
    headers: dict[str, str],
    why: str,
) -> None:
    error = await _refused(stub, _open("/echo", headers=headers))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in error.details()
    assert ws_server.requests == []


async def test_the_first_message_must_be_open(
    stub: websocket_pb2_grpc.WebSocketServiceStub,
) -> None:
    error = await _refused(stub, _text("hello"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_caller_frame_over_max_frame_size_is_refused(ws_server: EchoServer) -> None:
    async with (
        serve_for_test(config_for(ws_server.port, max_frame_size="1KiB")) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        call = websocket_pb2_grpc.WebSocketServiceStub(channel).Connect()
        await call.write(_open("/echo"))
        await call.read()
        await call.write(_binary(bytes(2048)))
        message = await call.read()
        assert message.WhichOneof("kind") == "closed"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(caught.value).reason == "VALUE_TOO_LARGE"


async def test_an_unknown_target_is_not_found(
    stub: websocket_pb2_grpc.WebSocketServiceStub,
) -> None:
    request = Request(open=websocket_pb2.WebSocketOpen(target="nope", path="/echo"))
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_upstream_that_is_down_is_unavailable() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_for(port) + "    retry_policy: {max_retries: 0}\n"
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = websocket_pb2_grpc.WebSocketServiceStub(channel)
        error = await _refused(stub, _open("/echo"))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(error).reason == "UPSTREAM_UNAVAILABLE"


async def test_an_upstream_frame_over_max_frame_size_closes_with_1009(
    ws_server: EchoServer,
) -> None:
    async with (
        serve_for_test(config_for(ws_server.port, max_frame_size="1KiB")) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        call = websocket_pb2_grpc.WebSocketServiceStub(channel).Connect()
        await call.write(_open("/flood?count=1&size=2048"))
        await call.read()
        message = await call.read()
        assert message.closed.code == 1009
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "VALUE_TOO_LARGE"


async def test_an_upstream_that_stops_reading_holds_the_caller(
    stub: websocket_pb2_grpc.WebSocketServiceStub, ws_server: EchoServer
) -> None:
    """Back-pressure the other way: the upstream reads nothing, so the sidecar stops
    reading the caller, whose writes then wait (gRPC flow control): only a bounded number
    of 64 KiB frames get out of the caller."""
    call = stub.Connect()
    await call.write(_open("/sink"))
    await call.read()
    written = 0

    async def write_many() -> None:
        nonlocal written
        for _ in range(1500):
            await call.write(_binary(bytes(64 * 1024)))
            written += 1

    writer = asyncio.create_task(write_many())
    last, still_since, give_up = -1, time.monotonic(), time.monotonic() + 20
    while time.monotonic() < give_up and not writer.done():
        await asyncio.sleep(0.1)
        if written != last:
            last, still_since = written, time.monotonic()
        elif time.monotonic() - still_since > 0.5:
            break
    assert not writer.done()
    assert written < 600, written
    print(f"caller frames written while the upstream did not read: {written} of 1500")
    ws_server.sink_released.set()
    call.cancel()
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, Exception):
        await writer
