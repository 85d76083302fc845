"""Chunks that arrive while a write to a slow client is in flight go out merged in the next
message; `coalesce_chunks: false` keeps one message per upstream chunk."""

from __future__ import annotations

import asyncio

import grpc
from ai.fake_llm import FakeLLM
from ai.helpers import ai_sidecar, config, model, user

from generated.integration.v1 import ai_pb2

WORDS = [f"w{i}" for i in range(300)]
# 4 KB per chunk: 1.2 MB in all, far past HTTP/2's flow-control window, so writes to a
# client that stops reading do block (small chunks would all fit in the window).
BIG = [f"w{i}-" + "x" * 4000 for i in range(300)]


async def _read_slowly(ai: object, target: str) -> list[ai_pb2.StreamCompleteResponse]:
    call = ai.stub.StreamComplete(  # type: ignore[attr-defined]
        ai_pb2.StreamCompleteRequest(target=target, messages=user("go"))
    )
    messages = [await call.read()]
    await asyncio.sleep(0.2)  # the client falls behind; the upstream has sent everything
    while (message := await call.read()) != grpc.aio.EOF:
        messages.append(message)
    return messages


async def test_a_client_that_falls_behind_gets_fewer_fuller_messages_in_order(
    fake: FakeLLM,
) -> None:
    fake.words = BIG
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        messages = await _read_slowly(ai, "openai")
    assert "".join(m.content for m in messages) == " ".join(BIG)
    carried = [m.content.count("-x") for m in messages]
    assert max(carried) >= 8  # the backlog went out several chunks per message
    assert len(messages) < len(BIG) * 0.8
    assert messages[-1].end.usage.output_tokens == len(BIG)


async def test_coalescing_off_sends_one_message_per_upstream_chunk(fake: FakeLLM) -> None:
    fake.words = WORDS
    service = model("openai", fake.url, extra="coalesce_chunks: false")
    async with ai_sidecar(config(service)) as ai:
        messages = await _read_slowly(ai, "openai")
    assert [m.content for m in messages[:-1]] == [w + " " for w in WORDS[:-1]] + [WORDS[-1]]
    assert messages[-1].HasField("end")
