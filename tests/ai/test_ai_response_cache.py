"""The response cache of an alias: deterministic answers (temperature 0 or a seed) reach the
upstream once; a cached streamed answer still streams."""

from __future__ import annotations

from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, read_stream, text_of, user

from generated.integration.v1 import ai_pb2

CACHED_ALIAS = """\
  cache:
    type: cache
  chat:
    type: ai_alias
    deployments: [openai]
    cache: {target: cache, ttl: 1h}
"""


def _stream(
    temperature: float | None = None, seed: int | None = None, text: str = "hi"
) -> ai_pb2.StreamCompleteRequest:
    request = ai_pb2.StreamCompleteRequest(target="chat", messages=user(text))
    if temperature is not None:
        request.temperature = temperature
    if seed is not None:
        request.seed = seed
    return request


async def test_a_deterministic_request_streamed_twice_reaches_the_upstream_once(
    fake: FakeLLM,
) -> None:
    fake.words = [f"w{i}" for i in range(20)]
    async with ai_sidecar(config(model("openai", fake.url), CACHED_ALIAS)) as ai:
        first, first_error = await read_stream(ai.stub.StreamComplete(_stream(temperature=0)))
        second, second_error = await read_stream(ai.stub.StreamComplete(_stream(temperature=0)))
    assert first_error is None and second_error is None
    assert len(fake.completions) == 1
    assert text_of(first) == text_of(second) == " ".join(f"w{i}" for i in range(20))
    assert len(second) == 21  # still a stream: one message per piece, then the end
    one, two = first[-1].end, second[-1].end
    assert (one.finish_reason, one.usage, one.model) == (two.finish_reason, two.usage, two.model)
    assert (one.cached, two.cached) == (False, True)
    assert two.deployment == "openai/fake-model"


async def test_a_seed_makes_a_request_cacheable_and_complete_reads_the_same_entry(
    fake: FakeLLM,
) -> None:
    async with ai_sidecar(config(model("openai", fake.url), CACHED_ALIAS)) as ai:
        streamed, _ = await read_stream(ai.stub.StreamComplete(_stream(seed=42)))
        whole = await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="chat", messages=user("hi"), seed=42)
        )
    assert len(fake.completions) == 1
    assert whole.cached and whole.content == text_of(streamed)


async def test_temperature_above_zero_without_a_seed_is_never_cached(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url), CACHED_ALIAS)) as ai:
        for _ in range(2):
            messages, _ = await read_stream(ai.stub.StreamComplete(_stream(temperature=0.7)))
            assert not messages[-1].end.cached
    assert len(fake.completions) == 2


async def test_different_prompts_get_different_entries(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url), CACHED_ALIAS)) as ai:
        await read_stream(ai.stub.StreamComplete(_stream(temperature=0, text="one")))
        await read_stream(ai.stub.StreamComplete(_stream(temperature=0, text="two")))
    assert len(fake.completions) == 2


async def test_a_failed_answer_is_not_cached(fake: FakeLLM) -> None:
    fake.then(Step(cut_after=3))
    async with ai_sidecar(config(model("openai", fake.url), CACHED_ALIAS)) as ai:
        _, error = await read_stream(ai.stub.StreamComplete(_stream(temperature=0)))
        messages, again = await read_stream(ai.stub.StreamComplete(_stream(temperature=0)))
    assert error is not None and again is None
    assert not messages[-1].end.cached and len(fake.completions) == 2
