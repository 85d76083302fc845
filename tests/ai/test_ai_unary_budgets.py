"""Embed, GenerateImage and Transcribe take an alias's own and per-caller budgets as chat does,
embedding inputs are counted with tiktoken for OpenAI's embedding models, and a Transcribe
is admitted before its upload is read.

The input `hello hello ... hello` (40 words) is 40 tokens in cl100k_base and 40 words as the
fake counts usage, but 60 tokens at the 4-characters estimate: a budget of exactly 40 tells
the count from the estimate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from ai.fake_llm import FakeLLM, Step
from ai.helpers import API_KEY, ai_sidecar, config
from ai.test_ai_media import AUDIO, stream_of, transcribe_messages
from redis_server import key_prefix, redis_address, redis_client
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2, ai_pb2_grpc
from sidecar.ai.budgets import AliasBudgets
from sidecar.ai.tokenizer import PromptCounter, load_encoding
from sidecar.ai.tokens import estimate_embedding_tokens
from sidecar.server import RunningServer
from sidecar.servicers.ai import AIServicer
from sidecar.testing import FakeClock

__all__ = ["key_prefix", "redis_address", "redis_client"]  # fixtures

EMBEDDING_MODEL = "text-embedding-3-small"
WORDS = 40
TEXT = " ".join(["hello"] * WORDS)


def _service(fake: FakeLLM, *, model: str = EMBEDDING_MODEL, extra: str = "") -> str:
    return (
        f"  openai:\n    type: ai_model\n    endpoint: {fake.url}/v1\n"
        f"    auth: {{type: bearer, token: {API_KEY}}}\n    model: {model}\n"
        f"    retry_policy: {{max_retries: 0}}\n{extra}"
    )


def _alias(rate_limit: str) -> str:
    return (
        "  search:\n    type: ai_alias\n    deployments: [openai]\n"
        f"    retry_policy: {{max_retries: 0}}\n    rate_limit: {rate_limit}\n"
    )


def _embed(text: str = TEXT, target: str = "search") -> ai_pb2.EmbedRequest:
    return ai_pb2.EmbedRequest(target=target, inputs=[text])


def _embeddings(fake: FakeLLM) -> int:
    """Embedding requests the fake received (the start-up model check is not one)."""
    return sum(e.request.path == "/v1/embeddings" for e in fake.http.exchanges)


def _budgets(running: RunningServer) -> AliasBudgets:
    servicer = running.servicers["integration.v1.AIService"]
    assert isinstance(servicer, AIServicer)
    limits = servicer.router.route("search").limits
    assert limits is not None
    return limits


@pytest.fixture
async def embedder() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key=API_KEY)
    fake.models = [EMBEDDING_MODEL, "fake-model"]
    await fake.start()
    yield fake
    await fake.close()


async def test_embedding_inputs_are_counted_as_tiktoken_counts_them() -> None:
    encoding = await load_encoding("cl100k_base")
    counter = PromptCounter("cl100k_base")
    assert await counter.count_texts([TEXT]) == len(encoding.encode_ordinary(TEXT)) == WORDS
    assert estimate_embedding_tokens([TEXT]) == 60  # what the estimate would reserve
    # Past 2048 characters the inputs are encoded in a thread, to the same count.
    long = ["tokens are counted off the event loop " * 100, "naïve café 東京 " * 50]
    exact = sum(len(encoding.encode_ordinary(text)) for text in long)
    assert await counter.count_texts(long) == exact


async def test_an_openai_embedding_model_reserves_exactly_its_tiktoken_count(
    embedder: FakeLLM,
) -> None:
    budget = "rate_limit: {tokens_per_minute: 40}\n"
    async with ai_sidecar(config(_service(embedder, extra="    " + budget))) as ai:
        reply = await ai.stub.Embed(_embed(target="openai"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as over:  # 41 tokens: more than it holds
            await ai.stub.Embed(_embed(TEXT + " hello", target="openai"), timeout=5)
    assert reply.usage.total_tokens == WORDS
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(over.value).reason == "TOKEN_LIMIT_EXCEEDED"
    assert _embeddings(embedder) == 1  # the refused call reached no upstream


async def test_other_models_reserve_the_estimate(embedder: FakeLLM) -> None:
    budget = "    rate_limit: {tokens_per_minute: 59}\n"  # the estimate of TEXT is 60
    services = config(_service(embedder, model="fake-model", extra=budget))
    async with ai_sidecar(services) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as over:
            await ai.stub.Embed(_embed(target="openai"), timeout=5)
    assert error_info(over.value).reason == "TOKEN_LIMIT_EXCEEDED"


async def test_an_alias_token_budget_is_charged_by_embed_and_settled_to_the_usage(
    embedder: FakeLLM,
) -> None:
    deployment_budget = "    rate_limit: {tokens_per_minute: 100000}\n"  # counts with tiktoken
    services = config(
        _service(embedder, extra=deployment_budget), _alias("{tokens_per_minute: 100}")
    )
    embedder.words = []
    async with ai_sidecar(services, clock=FakeClock()) as ai:  # no refill: exact balances
        budgets = _budgets(ai.running)
        reply = await ai.stub.Embed(_embed(), timeout=5)
        after_one = budgets.tokens_available()
        # The reservation is the exact count: 60 (the estimate) would not fit the 60 left.
        await ai.stub.Embed(_embed(" ".join(["hello"] * 60)), timeout=5)
        after_two = budgets.tokens_available()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ai.stub.Embed(_embed(), timeout=1)
    assert reply.deployment == f"openai/{EMBEDDING_MODEL}"
    assert after_one == 100 - WORDS  # reserved 40, settled to the 40 reported
    assert after_two == 0
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(refused.value).metadata["alias"] == "search"
    assert _embeddings(embedder) == 2


async def test_an_alias_budget_settles_an_embed_to_the_reported_usage_not_the_reservation(
    embedder: FakeLLM,
) -> None:
    # Without a deployment budget the alias reserves the estimate (60); the fake reports 40.
    services = config(_service(embedder), _alias("{tokens_per_minute: 1000}"))
    async with ai_sidecar(services, clock=FakeClock()) as ai:
        await ai.stub.Embed(_embed(), timeout=5)
        available = _budgets(ai.running).tokens_available()
    assert available == 1000 - WORDS


async def test_a_callers_embed_past_its_budget_is_refused_while_another_caller_proceeds(
    embedder: FakeLLM,
    redis_address: tuple[str, int],
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    host, port = redis_address
    limit = (
        f'{{store: redis, connection: budgets, key_prefix: "{key_prefix}", '
        f"per_caller: {{tokens_per_minute: {WORDS * 3 // 2}}}}}"
    )
    deployment_budget = "    rate_limit: {tokens_per_minute: 100000}\n"
    services = (
        "server: {access_log: false}\n"
        f"connections:\n  budgets: {{type: redis, host: {host}, port: {port}}}\n"
        "services:\n" + _service(embedder, extra=deployment_budget) + _alias(limit)
    )

    def caller(name: str) -> tuple[tuple[str, str]]:
        return (("x-tenant-id", name),)

    async with ai_sidecar(services) as ai:
        await ai.stub.Embed(_embed(), metadata=caller("acme"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ai.stub.Embed(_embed(), metadata=caller("acme"), timeout=1)
        other = await ai.stub.Embed(_embed(), metadata=caller("globex"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(refused.value)
    assert (info.reason, info.metadata["alias"], info.metadata["caller"]) == (
        "RATE_LIMITED",
        "search",
        "acme",
    )
    # 20 tokens short at 1 token a second.
    assert 10 < (retry_delay(refused.value) or 0) <= 21
    assert len(other.embeddings) == 1
    assert _embeddings(embedder) == 2  # the refused call reached no upstream
    stored = await redis_client.hget(
        f"{key_prefix}sidecar:ratelimit:ai:search:caller:acme:tokens", "tokens"
    )
    assert stored is not None and float(stored) < WORDS  # the first call was charged on Redis


async def test_generate_image_and_transcribe_take_the_alias_budget(fake: FakeLLM) -> None:
    services = config(_service(fake, model="fake-model"), _alias("{tokens_per_minute: 10000}"))
    async with ai_sidecar(services, clock=FakeClock()) as ai:
        budgets = _budgets(ai.running)
        image = await ai.stub.GenerateImage(
            ai_pb2.GenerateImageRequest(target="search", prompt="a red fox"), timeout=5
        )
        after_image = budgets.tokens_available()
        text = await ai.stub.Transcribe(
            stream_of(transcribe_messages(ai_pb2.TranscribeConfig(target="search"), AUDIO)),
            timeout=5,
        )
        after_text = budgets.tokens_available()
    assert image.usage.total_tokens == 3 + 100
    assert after_image == 10000 - 103  # settled to the upstream's usage
    assert text.text.startswith(f"heard {len(AUDIO)} bytes")
    assert after_text == after_image - text.usage.total_tokens


async def test_an_attempt_the_upstream_refused_costs_the_alias_nothing(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(status=500))
    services = config(
        _service(fake, model="fake-model").replace("openai:", "primary:"),
        _service(backup, model="fake-model").replace("openai:", "backup:"),
        _alias("{tokens_per_minute: 10000}").replace("[openai]", "[primary, backup]"),
    )
    async with ai_sidecar(services, clock=FakeClock()) as ai:
        image = await ai.stub.GenerateImage(
            ai_pb2.GenerateImageRequest(target="search", prompt="a red fox"), timeout=5
        )
        available = _budgets(ai.running).tokens_available()
    assert image.deployment == "backup/fake-model"
    assert len(fake.media) == len(backup.media) == 1
    assert available == 10000 - image.usage.total_tokens  # the 500 cost nothing


async def _refused_before_the_upload(
    stub: ai_pb2_grpc.AIServiceStub, target: str
) -> tuple[grpc.aio.AioRpcError, float]:
    """Send the first message only (config and a piece of audio), then never the rest: the
    answer must come without the upload being read. Returns the error and its delay."""

    async def first_then_never() -> AsyncIterator[ai_pb2.TranscribeRequest]:
        yield ai_pb2.TranscribeRequest(
            config=ai_pb2.TranscribeConfig(target=target), audio=AUDIO[:1000]
        )
        await asyncio.Event().wait()  # the rest of the audio never comes

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Transcribe(first_then_never(), timeout=10)
    return caught.value, time.monotonic() - started


async def test_a_transcribe_over_budget_is_refused_before_its_upload_is_read(
    fake: FakeLLM,
) -> None:
    services = config(_service(fake, model="fake-model"), _alias("{requests_per_minute: 1}"))
    async with ai_sidecar(services) as ai:
        await ai.stub.Transcribe(
            stream_of(transcribe_messages(ai_pb2.TranscribeConfig(target="search"), AUDIO)),
            timeout=5,
        )
        error, seconds = await _refused_before_the_upload(ai.stub, "search")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "RATE_LIMITED"
    assert (retry_delay(error) or 0) > 30
    assert seconds < 2  # not the 10 s deadline: nothing waited for the rest of the audio
    assert len(fake.uploads) == 1


async def test_a_transcribe_to_an_open_breaker_is_refused_before_its_upload_is_read(
    fake: FakeLLM,
) -> None:
    breaker = "    circuit_breaker: {failure_threshold: 1, reset_timeout: 60s}\n"
    fake.default = Step(status=500)
    async with ai_sidecar(config(_service(fake, model="fake-model", extra=breaker))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as failed:  # opens the breaker
            await ai.stub.Transcribe(
                stream_of(transcribe_messages(ai_pb2.TranscribeConfig(target="openai"), AUDIO)),
                timeout=5,
            )
        error, seconds = await _refused_before_the_upload(ai.stub, "openai")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "CIRCUIT_OPEN"
    assert seconds < 2
    assert len(fake.media) == 1  # only the call that opened the breaker reached the upstream
