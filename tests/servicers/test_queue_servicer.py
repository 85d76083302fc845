"""QueueService through a real gRPC server on in-memory queues (time on a FakeClock): a
Receive stream that the client cancels stops at once and its unacked message comes back
after its visibility timeout, max_in_flight holds until acks make room, every bound is
INVALID_ARGUMENT before any pipeline, an unknown target is NOT_FOUND, and shutdown ends
streams with OK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from support import error_info

from generated.integration.v1 import queue_pb2 as pb
from generated.integration.v1.queue_pb2_grpc import QueueServiceStub
from sidecar.server import RunningServer
from sidecar.testing import FakeClock, serve_for_test

CONFIG = """
services:
  jobs: {type: queue, visibility_timeout: 5s, default: true}
  orders: {type: queue, fifo: true}
  small: {type: queue, max_messages: 2}
  poison: {type: queue, max_receive_count: 1, dead_letter: dead}
  dead: {type: queue}
"""


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000.0)


@pytest.fixture
async def running(clock: FakeClock) -> AsyncIterator[RunningServer]:
    async with serve_for_test(CONFIG, clock=clock) as server:
        yield server


@pytest.fixture
async def stub(running: RunningServer) -> AsyncIterator[QueueServiceStub]:
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield QueueServiceStub(channel)


def open_streams(running: RunningServer) -> int:
    return len(running.servicers["integration.v1.QueueService"]._windows)


async def wait_until(check: Callable[[], bool], what: str) -> float:
    """Poll a condition the server reaches on its own; the real seconds it took (< 5)."""
    started = time.monotonic()
    for _ in range(500):
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def next_message(call: Any, within: float = 5.0) -> pb.QueueMessage:
    response: pb.ReceiveResponse = await asyncio.wait_for(call.read(), within)
    return response.message


async def test_send_receive_ack_on_the_default_queue(stub: QueueServiceStub) -> None:
    sent = await stub.Send(pb.SendRequest(body=b"\x00\xffjob", attributes={"kind": "resize"}))
    call = stub.Receive(pb.ReceiveRequest(max_messages=1))
    message = await next_message(call)
    assert (message.message_id, message.body) == (sent.message_id, b"\x00\xffjob")
    assert (dict(message.attributes), message.receive_count) == ({"kind": "resize"}, 1)
    assert message.sent_time.seconds > 0
    assert await call.code() == grpc.StatusCode.OK  # max_messages reached: the stream ends
    acked = await stub.Ack(pb.AckRequest(receipt_handles=[message.receipt_handle]))
    assert (acked.acknowledged, list(acked.failures)) == (1, [])


async def test_a_cancelled_receive_stops_at_once_and_its_unacked_message_comes_back(
    stub: QueueServiceStub, running: RunningServer, clock: FakeClock
) -> None:
    sent = await stub.Send(pb.SendRequest(target="jobs", body=b"m1"))
    call = stub.Receive(pb.ReceiveRequest(target="jobs"))
    first = await next_message(call)
    assert first.message_id == sent.message_id
    await clock.wait_for_sleepers(1)  # the stream's next long poll is parked
    call.cancel()
    took = await wait_until(lambda: open_streams(running) == 0, "the stream ended")
    assert took < 1.0
    # No poll lingers: a message sent now goes to the next stream, not to the cancelled one.
    await stub.Send(pb.SendRequest(target="jobs", body=b"m2"))
    again = stub.Receive(pb.ReceiveRequest(target="jobs", max_messages=2))
    assert (await next_message(again)).body == b"m2"
    await clock.advance(5.0)  # m1's visibility timeout runs out: delivered again
    back = await next_message(again)
    assert (back.message_id, back.receive_count) == (sent.message_id, 2)
    assert await again.code() == grpc.StatusCode.OK


async def test_max_in_flight_holds_until_an_ack_makes_room(
    stub: QueueServiceStub, clock: FakeClock
) -> None:
    await stub.SendBatch(
        pb.SendBatchRequest(
            target="jobs", entries=[pb.SendBatchEntry(id=f"e{i}", body=b"%d" % i) for i in range(5)]
        )
    )
    call = stub.Receive(pb.ReceiveRequest(target="jobs", max_in_flight=2))
    held = [await next_message(call), await next_message(call)]
    read = asyncio.ensure_future(call.read())
    await asyncio.sleep(0.3)
    assert not read.done()  # two unacked: no third message
    await stub.Ack(pb.AckRequest(target="jobs", receipt_handles=[held[0].receipt_handle]))
    third: pb.ReceiveResponse = await asyncio.wait_for(read, 5.0)
    assert third.message.body not in {m.body for m in held}
    released = pb.ChangeVisibilityRequest(target="jobs", receipt_handle=held[1].receipt_handle)
    await stub.ChangeVisibility(released)  # 0: released, its slot free, it comes back
    fourth = await next_message(call)
    assert fourth.body in {held[1].body, b"3", b"4"}
    call.cancel()


async def test_an_expired_visibility_timeout_frees_the_slot(
    stub: QueueServiceStub, clock: FakeClock
) -> None:
    await stub.Send(pb.SendRequest(target="jobs", body=b"only"))
    call = stub.Receive(pb.ReceiveRequest(target="jobs", max_in_flight=1))
    first = await next_message(call)
    await clock.wait_for_sleepers(1)
    await clock.advance(5.0)
    again = await next_message(call)  # the slot was freed by the timeout, not by an ack
    assert (again.message_id, again.receive_count) == (first.message_id, 2)
    call.cancel()


async def test_stale_receipts_are_per_handle_failures_and_failed_precondition(
    stub: QueueServiceStub, clock: FakeClock
) -> None:
    await stub.Send(pb.SendRequest(target="jobs", body=b"slow"))
    call = stub.Receive(
        pb.ReceiveRequest(target="jobs", max_messages=2, visibility_timeout=seconds(1))
    )
    first = await next_message(call)
    await clock.wait_for_sleepers(1)
    await clock.advance(1.0)
    second = await next_message(call)
    answer = await stub.Ack(
        pb.AckRequest(target="jobs", receipt_handles=[first.receipt_handle, second.receipt_handle])
    )
    assert answer.acknowledged == 1
    [failure] = answer.failures
    assert (failure.receipt_handle, failure.error.reason) == (
        first.receipt_handle,
        "RECEIPT_INVALID",
    )
    assert failure.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ChangeVisibility(
            pb.ChangeVisibilityRequest(target="jobs", receipt_handle=second.receipt_handle)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "RECEIPT_INVALID"


async def test_fifo_send_batch_and_order(stub: QueueServiceStub) -> None:
    entries = [
        pb.SendBatchEntry(
            id=f"e{i}", body=b"%d" % i, message_group_id="g", deduplication_id=f"d{i}"
        )
        for i in range(3)
    ]
    answer = await stub.SendBatch(pb.SendBatchRequest(target="orders", entries=entries))
    assert [r.id for r in answer.results] == ["e0", "e1", "e2"]
    assert all(
        r.message_id and r.sequence_number and not r.HasField("error") for r in answer.results
    )
    call = stub.Receive(pb.ReceiveRequest(target="orders", max_messages=3))
    got = [await next_message(call) for _ in range(3)]
    assert [m.body for m in got] == [b"0", b"1", b"2"]
    assert {m.message_group_id for m in got} == {"g"}


async def test_a_full_queue_is_resource_exhausted(stub: QueueServiceStub) -> None:
    for body in (b"1", b"2"):
        await stub.Send(pb.SendRequest(target="small", body=body))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Send(pb.SendRequest(target="small", body=b"3"))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_message_received_max_receive_count_times_goes_to_the_dead_letter_queue(
    stub: QueueServiceStub, clock: FakeClock
) -> None:
    sent = await stub.Send(pb.SendRequest(target="poison", body=b"bad"))
    call = stub.Receive(pb.ReceiveRequest(target="poison", visibility_timeout=seconds(1)))
    await next_message(call)
    await clock.wait_for_sleepers(1)
    await clock.advance(1.0)
    dead = stub.Receive(pb.ReceiveRequest(target="dead", max_messages=1))
    assert (await next_message(dead)).message_id == sent.message_id
    call.cancel()


def _bad_requests() -> list[tuple[str, str, Any, str]]:
    """(rpc, case, request, field named in the error)."""
    big = b"x" * (256 * 1024 + 1)
    many = {f"a{i}": "v" for i in range(10)}
    return [
        ("Send", "empty body", pb.SendRequest(), "body"),
        ("Send", "body over 256 KiB", pb.SendRequest(body=big), "body"),
        ("Send", "ten attributes", pb.SendRequest(body=b"x", attributes=many), "attributes"),
        (
            "Send",
            "reserved attribute",
            pb.SendRequest(body=b"x", attributes={"AWS.trace": "1"}),
            "attributes['AWS.trace']",
        ),
        ("Send", "delay over 15 min", pb.SendRequest(body=b"x", delay=seconds(901)), "delay"),
        ("Send", "negative delay", pb.SendRequest(body=b"x", delay=seconds(-1)), "delay"),
        (
            "Send",
            "group id on a standard queue",
            pb.SendRequest(body=b"x", message_group_id="g"),
            "message_group_id",
        ),
        (
            "Send",
            "no group id on a FIFO queue",
            pb.SendRequest(target="orders", body=b"x"),
            "message_group_id",
        ),
        (
            "Send",
            "delay on a FIFO queue",
            pb.SendRequest(target="orders", body=b"x", message_group_id="g", delay=seconds(1)),
            "delay",
        ),
        ("SendBatch", "no entries", pb.SendBatchRequest(), "entries"),
        (
            "SendBatch",
            "eleven entries",
            pb.SendBatchRequest(
                entries=[pb.SendBatchEntry(id=f"e{i}", body=b"x") for i in range(11)]
            ),
            "entries",
        ),
        (
            "SendBatch",
            "duplicate ids",
            pb.SendBatchRequest(
                entries=[pb.SendBatchEntry(id="e", body=b"x"), pb.SendBatchEntry(id="e", body=b"y")]
            ),
            "entries[1].id",
        ),
        (
            "SendBatch",
            "bad entry id",
            pb.SendBatchRequest(entries=[pb.SendBatchEntry(id="no spaces", body=b"x")]),
            "entries[0].id",
        ),
        (
            "SendBatch",
            "batch over 256 KiB",
            pb.SendBatchRequest(
                entries=[pb.SendBatchEntry(id=f"e{i}", body=b"x" * 200_000) for i in range(2)]
            ),
            "entries",
        ),
        ("Ack", "no handles", pb.AckRequest(), "receipt_handles"),
        ("Ack", "101 handles", pb.AckRequest(receipt_handles=["h"] * 101), "receipt_handles"),
        ("Ack", "empty handle", pb.AckRequest(receipt_handles=[""]), "receipt_handles[0]"),
        ("ChangeVisibility", "no handle", pb.ChangeVisibilityRequest(), "receipt_handle"),
        (
            "ChangeVisibility",
            "over 12 hours",
            pb.ChangeVisibilityRequest(receipt_handle="h", visibility_timeout=seconds(43_201)),
            "visibility_timeout",
        ),
        ("Receive", "max_in_flight 1001", pb.ReceiveRequest(max_in_flight=1001), "max_in_flight"),
        ("Receive", "wait over 20 s", pb.ReceiveRequest(wait_time=seconds(21)), "wait_time"),
        ("Receive", "wait under 1 s", pb.ReceiveRequest(wait_time=seconds(0.5)), "wait_time"),
        (
            "Receive",
            "visibility over 12 hours",
            pb.ReceiveRequest(visibility_timeout=seconds(43_201)),
            "visibility_timeout",
        ),
        ("Receive", "negative max_messages", pb.ReceiveRequest(max_messages=-1), "max_messages"),
    ]


@pytest.mark.parametrize(
    ("rpc", "request_message", "field"),
    [(rpc, request, field) for rpc, _, request, field in _bad_requests()],
    ids=[case for _, case, _, _ in _bad_requests()],
)
async def test_every_bound_is_invalid_argument_before_any_pipeline(
    stub: QueueServiceStub, running: RunningServer, rpc: str, request_message: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if rpc == "Receive":
            async for _ in stub.Receive(request_message):
                pass
        else:
            await getattr(stub, rpc)(request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert info.metadata["field"] == field
    assert info.reason in {"INVALID_REQUEST", "VALUE_TOO_LARGE"}
    for integration in running.integrations:  # no call reached a pipeline
        pipeline = integration.pipeline
        if integration.type == "queue" and pipeline and pipeline.circuit_breaker:
            assert pipeline.circuit_breaker.snapshot().total_in_window == 0


async def test_an_unknown_target_is_not_found(stub: QueueServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Send(pb.SendRequest(target="nope", body=b"x"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "TARGET_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.Receive(pb.ReceiveRequest(target="nope")):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shutdown_ends_open_receive_streams_with_ok(clock: FakeClock) -> None:
    async with (
        serve_for_test(CONFIG, clock=clock) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        call = QueueServiceStub(channel).Receive(pb.ReceiveRequest(target="jobs"))
        await wait_until(lambda: open_streams(server) == 1, "the stream is open")
        await server.stop(grace=1.0)
        assert await asyncio.wait_for(call.code(), 5.0) == grpc.StatusCode.OK


async def test_a_receive_stream_ends_with_ok_before_the_callers_deadline() -> None:
    async with (
        serve_for_test(CONFIG) as server,  # the real clock: deadlines are real time
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        started = time.monotonic()
        call = QueueServiceStub(channel).Receive(pb.ReceiveRequest(target="jobs"), timeout=3.0)
        assert [response async for response in call] == []
        assert await call.code() == grpc.StatusCode.OK
        assert time.monotonic() - started < 3.0


async def test_the_empty_long_polls_of_an_idle_queue_never_open_its_breaker(
    stub: QueueServiceStub, running: RunningServer, clock: FakeClock
) -> None:
    """20 s polls would all be slow calls (slow_call_duration 10 s) and open the breaker of
    an idle queue as soon as 20 of them ended within its 10 s window; they are cut to 9 s."""
    calls = [stub.Receive(pb.ReceiveRequest(target="jobs")) for _ in range(25)]  # ask 20 s
    await wait_until(lambda: clock.sleepers >= 25, "every stream's poll is parked")
    # Just past the 9 s the polls are cut to: every one ends inside the breaker's 10 s
    # window, however late the loop runs them (a 20 s advance could leave some out).
    await clock.advance(9.5)
    breaker = running.integrations.resolve("queue", "jobs").pipeline.circuit_breaker
    # Enough calls for the breaker to judge; they settle on the loop after the advance.
    await wait_until(lambda: breaker.snapshot().total_in_window >= 20, "20 polls recorded")
    snapshot = breaker.snapshot()
    assert (snapshot.state.value, snapshot.slow_call_ratio) == ("closed", 0.0)
    for call in calls:
        call.cancel()
