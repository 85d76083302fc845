"""How a stream ends when it does not end well: the caller cancels, the deadline passes, the
upstream drops mid-stream, the caller reads too slowly. The fake upstream records the
moment the sidecar closed its connection."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, read_stream, text_of, user
from support import error_info

from generated.integration.v1 import ai_pb2

ALIAS = "  chat:\n    type: ai_alias\n    deployments: [primary, backup]\n"


async def test_cancelling_the_call_closes_the_upstream_stream_within_100ms(
    fake: FakeLLM,
) -> None:
    fake.words = [f"w{i}" for i in range(200)]
    fake.default = Step(delay=0.02)
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="openai", messages=user("go"))
        )
        received = 0
        async for _ in call:
            received += 1
            if received == 3:
                break
        cancelled_at = time.monotonic()
        call.cancel()
        exchange = fake.completions[0]
        await asyncio.wait_for(exchange.closed.wait(), 2)
    assert exchange.client_closed is not None and exchange.finished is None
    assert exchange.client_closed - cancelled_at < 0.1
    assert exchange.chunks_sent < 50


async def test_cancelling_before_the_first_chunk_closes_the_upstream_within_100ms(
    fake: FakeLLM,
) -> None:
    fake.default = Step(hang=True)
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="openai", messages=user("go"))
        )
        await asyncio.wait_for(fake.requests_seen(1), 5)
        await asyncio.sleep(0.05)  # the sidecar is now waiting for the first chunk
        cancelled_at = time.monotonic()
        call.cancel()
        exchange = fake.completions[0]
        await asyncio.wait_for(exchange.closed.wait(), 2)
    assert exchange.client_closed is not None
    assert exchange.client_closed - cancelled_at < 0.1


async def test_deadline_answers_deadline_exceeded_and_closes_the_upstream(fake: FakeLLM) -> None:
    fake.words = [f"w{i}" for i in range(100)]
    fake.default = Step(delay=0.05)
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="openai", messages=user("go")), timeout=0.6
        )
        messages, error = await read_stream(call)
        exchange = fake.completions[0]
        await asyncio.wait_for(exchange.closed.wait(), 2)
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(error).reason == "DEADLINE_EXCEEDED"
    assert error_info(error).metadata["deployment"] == "openai/fake-model"
    assert 0 < len(messages) < 100
    assert exchange.client_closed is not None and exchange.finished is None


async def test_first_chunk_timeout_falls_back_to_the_next_deployment(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = Step(hang=True)
    services = (
        model("primary", fake.url, extra="timeouts: {request: 200ms}"),
        model("backup", backup.url),
        ALIAS,
    )
    async with ai_sidecar(config(*services)) as ai:
        reply = await ai.stub.Complete(ai_pb2.CompleteRequest(target="chat", messages=user("hi")))
        await asyncio.wait_for(fake.completions[0].closed.wait(), 2)
    assert (reply.content, reply.deployment) == ("Backup answer.", "backup/fake-model")
    assert fake.completions[0].client_closed is not None


async def test_upstream_drop_mid_stream_keeps_the_chunks_then_unavailable_without_retry(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = Step(cut_after=4, delay=0.01)  # the role chunk, then three words
    services = (
        model("primary", fake.url, retry="{max_retries: 3, base_delay: 10ms}"),
        model("backup", backup.url),
        ALIAS.replace(
            "deployments", "retry_policy: {max_retries: 3, base_delay: 10ms}\n    deployments"
        ),
    )
    async with ai_sidecar(config(*services)) as ai:
        messages, error = await read_stream(
            ai.stub.StreamComplete(ai_pb2.StreamCompleteRequest(target="chat", messages=user("x")))
        )
    assert text_of(messages) == "Hello from the "
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(error)
    assert info.reason == "STREAM_INTERRUPTED"
    assert (info.metadata["provider"], info.metadata["upstream_status"]) == ("openai", "200")
    assert len(fake.completions) == 1 and backup.completions == []


async def test_drop_before_the_first_chunk_is_retried_on_the_next_deployment(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.default = Step(cut_after=1)  # only the role chunk, which carries no text
    services = (model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(config(*services)) as ai:
        messages, error = await read_stream(
            ai.stub.StreamComplete(ai_pb2.StreamCompleteRequest(target="chat", messages=user("x")))
        )
    assert error is None and text_of(messages) == "Backup answer."


@pytest.mark.timeout(30)
async def test_a_stalled_reader_stops_the_upstream_instead_of_buffering(fake: FakeLLM) -> None:
    total = 40_000
    fake.words = ["x" * 1000] * total  # about 45 MB, more than every buffer on the way
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="openai", messages=user("go"))
        )
        await call.read()
        exchange = fake.completions[0]
        progress = -1
        while progress != exchange.chunks_sent:  # wait until the upstream can write no more
            progress = exchange.chunks_sent
            await asyncio.sleep(0.3)
        stalled_at = exchange.chunks_sent
        call.cancel()
    assert fake.http.write_pauses > 0
    assert stalled_at < total / 2 and exchange.finished is None
