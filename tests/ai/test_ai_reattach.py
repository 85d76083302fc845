"""Re-attachable calls: a retry with the same `idempotency-key` attaches to the running call
(or gets the finished answer replayed from the alias's cache, from any sidecar sharing it)
instead of sending a second upstream request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, read_stream, sleepers, text_of, user
from redis_server import redis_address, unique_prefix
from sidecar_process import sidecar_process
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2, ai_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.config.services.ai import AIReattachConfig
from sidecar.testing import FakeClock

__all__ = ["redis_address"]

WORDS = [f"w{i}" for i in range(60)]
ANSWER = " ".join(WORDS)


def _alias(reattach: str = "{ttl: 10m, detached_grace: 30s}", cache: str = "") -> str:
    return f"""\
  cache:
    type: cache
{cache}
  chat:
    type: ai_alias
    deployments: [openai]
    cache: {{target: cache, ttl: 1h}}
    reattach: {reattach}
"""


def _request(text: str = "tell me") -> ai_pb2.StreamCompleteRequest:
    # Temperature 0.7 (the default): not deterministic, so the response cache stays out.
    return ai_pb2.StreamCompleteRequest(target="chat", messages=user(text))


def _key(key: str, token: str = "") -> tuple[tuple[str, str], ...]:
    auth = (("authorization", f"Bearer {token}"),) if token else ()
    return (("idempotency-key", key), *auth)


async def _read_words(call: object, count: int) -> list[ai_pb2.StreamCompleteResponse]:
    """Messages of a stream until they hold `count` words."""
    messages: list[ai_pb2.StreamCompleteResponse] = []
    async for message in call:  # type: ignore[attr-defined]
        messages.append(message)
        if len(text_of(messages).split()) >= count:
            return messages
    raise AssertionError("the stream ended early")


async def _until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_retry_after_a_cancel_at_chunk_30_gets_the_whole_answer_from_one_request(
    fake: FakeLLM,
) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.01))
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        first = ai.stub.StreamComplete(_request(), metadata=_key("order-7"))
        seen = await _read_words(first, 30)
        first.cancel()
        retry, error = await read_stream(
            ai.stub.StreamComplete(_request(), metadata=_key("order-7"))
        )
    assert error is None
    assert len(text_of(seen).split()) >= 30
    assert text_of(retry) == ANSWER  # everything from the first chunk, once, in order
    assert not retry[-1].end.cached  # attached to the running call, not a replay
    assert retry[-1].end.deployment == "openai/fake-model"
    assert len(fake.completions) == 1


async def test_a_client_whose_deadline_passed_gets_the_whole_answer_when_it_retries(
    fake: FakeLLM,
) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.01))
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        _, late = await read_stream(
            ai.stub.StreamComplete(_request(), metadata=_key("slow"), timeout=0.2)
        )
        retry, error = await read_stream(
            ai.stub.StreamComplete(_request(), metadata=_key("slow"), timeout=10)
        )
    assert late is not None and late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error is None and text_of(retry) == ANSWER
    assert len(fake.completions) == 1


async def test_a_finished_answer_is_replayed_by_a_second_sidecar_sharing_the_redis_cache(
    fake: FakeLLM, redis_address: tuple[str, int], tmp_path: Path
) -> None:
    fake.words = WORDS
    host, port = redis_address
    cache = f"""\
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{unique_prefix()}"
"""
    yaml_text = config(model("openai", fake.url), _alias(cache=cache))
    async with ai_sidecar(yaml_text) as ai:
        first, _ = await read_stream(ai.stub.StreamComplete(_request(), metadata=_key("k-1")))
    async with (
        sidecar_process(tmp_path, yaml_text) as other,
        grpc.aio.insecure_channel(other.address) as channel,
    ):
        stub = ai_pb2_grpc.AIServiceStub(channel)
        replayed, error = await read_stream(
            stub.StreamComplete(_request(), metadata=_key("k-1"), timeout=10)
        )
        whole = await stub.Complete(
            ai_pb2.CompleteRequest(target="chat", messages=user("tell me")),
            metadata=_key("k-1"),
            timeout=10,
        )
    assert error is None
    assert text_of(first) == text_of(replayed) == whole.content == ANSWER
    assert replayed[-1].end.cached and whole.cached
    assert replayed[-1].end.usage == first[-1].end.usage
    assert len(fake.completions) == 1


async def test_complete_attaches_to_a_running_stream_with_the_same_key(fake: FakeLLM) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.01))
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        streaming = ai.stub.StreamComplete(_request(), metadata=_key("both"))
        await _read_words(streaming, 5)
        whole = await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="chat", messages=user("tell me")), metadata=_key("both")
        )
        await read_stream(streaming)
    assert whole.content == ANSWER and not whole.cached
    assert len(fake.completions) == 1


async def test_the_same_key_with_a_different_request_is_refused_while_running_and_after(
    fake: FakeLLM,
) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.01))
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        running = ai.stub.StreamComplete(_request(), metadata=_key("same"))
        await _read_words(running, 3)
        _, during = await read_stream(
            ai.stub.StreamComplete(_request("other"), metadata=_key("same"))
        )
        await read_stream(running)
        _, after = await read_stream(
            ai.stub.StreamComplete(_request("other"), metadata=_key("same"))
        )
    for error in (during, after):
        assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(error).reason == "IDEMPOTENCY_KEY_REUSED"
    assert len(fake.completions) == 1


async def test_one_callers_key_never_reaches_another_callers_answer(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        for token in ("tenant-a", "tenant-b"):
            messages, error = await read_stream(
                ai.stub.StreamComplete(_request(), metadata=_key("shared", token))
            )
            assert error is None and not messages[-1].end.cached
    assert len(fake.completions) == 2


@pytest.mark.parametrize(
    "key", ["k" * 129, "has space", "glob*"], ids=["too-long", "space", "glob"]
)
async def test_a_key_that_may_not_name_a_call_is_invalid(fake: FakeLLM, key: str) -> None:
    async with ai_sidecar(config(model("openai", fake.url), _alias())) as ai:
        _, error = await read_stream(ai.stub.StreamComplete(_request(), metadata=_key(key)))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == "idempotency-key"
    assert len(fake.completions) == 0


async def test_more_keyed_calls_than_max_calls_are_refused_with_a_retry_delay(
    fake: FakeLLM,
) -> None:
    fake.then(Step(stall_after=3))
    reattach = "{max_calls: 1, detached_grace: 1s}"
    async with ai_sidecar(config(model("openai", fake.url), _alias(reattach))) as ai:
        held = ai.stub.StreamComplete(_request(), metadata=_key("one"))
        await fake.requests_seen(1)
        _, error = await read_stream(ai.stub.StreamComplete(_request(), metadata=_key("two")))
        unkeyed, plain = await read_stream(ai.stub.StreamComplete(_request()))
        held.cancel()
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "BULKHEAD_FULL"
    assert retry_delay(error) == 1.0
    assert plain is None and text_of(unkeyed)  # a call without a key is not counted


async def test_an_answer_longer_than_the_buffer_ends_with_resource_exhausted(
    fake: FakeLLM,
) -> None:
    fake.words = WORDS
    async with ai_sidecar(
        config(model("openai", fake.url), _alias("{max_buffered_bytes: 64}"))
    ) as ai:
        messages, error = await read_stream(
            ai.stub.StreamComplete(_request(), metadata=_key("long"))
        )
        await _until(lambda: fake.open_requests == 0)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "VALUE_TOO_LARGE"
    assert len(text_of(messages)) <= 64


async def test_a_detached_call_nobody_reattaches_to_is_cancelled_after_the_grace(
    fake: FakeLLM,
) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.05))
    clock = FakeClock()  # only the grace sleeps on it: the fake streams in real time
    async with ai_sidecar(config(model("openai", fake.url), _alias()), clock=clock) as ai:
        first = ai.stub.StreamComplete(_request(), metadata=_key("gone"))
        await _read_words(first, 2)
        parked = clock.sleepers  # background tasks (health, ...) sleep on the clock too
        first.cancel()
        await sleepers(clock, parked + 1)  # the grace of the detached call has begun
        await clock.advance(29.9)
        assert fake.open_requests == 1  # detached from its caller, still running
        await clock.advance(0.1)
        await _until(lambda: fake.open_requests == 0)
        router = ai.running.servicers["integration.v1.AIService"].router
        registry = router.calls(router.route("chat"))
        assert registry is not None
        await _until(lambda: registry.running == 0)
        # The call is gone: the same key starts a new one.
        again, error = await read_stream(ai.stub.StreamComplete(_request(), metadata=_key("gone")))
    assert error is None and text_of(again) == ANSWER
    assert len(fake.completions) == 2
    assert fake.completions[0].tokens_sent < len(WORDS)  # cut short, not run to the end


async def test_stopping_the_sidecar_closes_the_upstream_of_a_detached_call(fake: FakeLLM) -> None:
    fake.words = WORDS
    fake.then(Step(delay=0.05))
    clock = FakeClock()  # the 30s grace never passes: only the shutdown can end the call
    async with ai_sidecar(config(model("openai", fake.url), _alias()), clock=clock) as ai:
        first = ai.stub.StreamComplete(_request(), metadata=_key("left"))
        await _read_words(first, 2)
        parked = clock.sleepers
        first.cancel()
        await sleepers(clock, parked + 1)  # detached
    await _until(lambda: fake.open_requests == 0, within=1.0)
    assert fake.completions[0].tokens_sent < len(WORDS)


async def test_without_reattach_the_key_is_ignored(fake: FakeLLM) -> None:
    alias = """\
  chat:
    type: ai_alias
    deployments: [openai]
"""
    async with ai_sidecar(config(model("openai", fake.url), alias)) as ai:
        for _ in range(2):
            _, error = await read_stream(
                ai.stub.StreamComplete(_request(), metadata=_key("k" * 200))
            )
            assert error is None
    assert len(fake.completions) == 2


def test_reattach_defaults_and_an_alias_without_a_cache_is_refused_at_load() -> None:
    settings = AIReattachConfig()
    assert (settings.ttl, settings.detached_grace) == (600.0, 30.0)
    assert (settings.max_calls, settings.max_buffered_bytes) == (1000, 1024 * 1024)
    no_cache = """\
  chat:
    type: ai_alias
    deployments: [openai]
    reattach: {ttl: 5m}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(config(model("openai", "http://127.0.0.1:9"), no_cache))
    assert "services.chat" in str(caught.value)
    assert "reattach needs cache" in str(caught.value)
