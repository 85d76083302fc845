"""Token budgets shared across sidecars on Redis (`rate_limit: {store: redis}`), reserved with
a real tokenizer and reconciled with the real usage; the fall-over when a budget is spent.

The fakes answer 40 words to a 10-word prompt and report usage as they count it: 10 + 3
prompt tokens and one per word, 53 a call. The sidecars count the prompt with tiktoken
(`gpt-4o-mini`: o200k_base) and reserve it plus `max_tokens` (40), a little more than 53, so
each completed call gives its difference back. A budget of 600 tokens per minute holds 600
at once and refills 10 a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
import tiktoken.load
import tiktoken.registry
from ai.fake_llm import FakeLLM, Step
from ai.helpers import API_KEY, ai_sidecar, read_stream, text_of, user
from redis_server import key_prefix, redis_address, redis_client
from sidecar_process import SidecarProcess, sidecar_process
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2, ai_pb2_grpc
from sidecar.ai import tokenizer
from sidecar.ai.budgets import AliasBudgets, AliasLimits, CallerLimits
from sidecar.ai.tokenizer import PromptCounter, encoding_for, load_encoding
from sidecar.ai.tokens import estimate_prompt_tokens
from sidecar.backends.ai.base import ChatMessage, ChatRequest
from sidecar.config import ConfigError, parse_config
from sidecar.errors import InvalidArgument, ResourceExhausted
from sidecar.resilience import Deadline
from sidecar.testing import FakeClock

__all__ = ["key_prefix", "redis_address", "redis_client"]  # fixtures

BUDGET = 600
REFILL = BUDGET / 60
PROMPT = " ".join(f"w{i}" for i in range(10))
ANSWER = [f"a{i}" for i in range(40)]
MAX_TOKENS = len(ANSWER)
USED = 10 + 3 + len(ANSWER)
"""What one complete call costs, as the fake reports it."""


def _chat(text: str = PROMPT) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(role="user", content=(text,)),))


async def _reserved() -> int:
    """What each call reserves: the prompt as o200k_base counts it, plus max_tokens."""
    return await PromptCounter("o200k_base").count(_chat()) + MAX_TOKENS


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    """The budgeted deployment's upstream and the next deployment's."""
    first, second = FakeLLM(ANSWER, api_key=API_KEY), FakeLLM(ANSWER, api_key=API_KEY)
    for fake in (first, second):
        fake.models = ["gpt-4o-mini"]
        await fake.start()
    yield first, second
    for fake in (first, second):
        await fake.close()


def _config(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis: tuple[str, int],
    prefix: str,
    *,
    backup_budget: int | None = None,
    alias_limit: str = "",
) -> str:
    def service(name: str, fake: FakeLLM, budget: int | None) -> str:
        limit = ""
        if budget is not None:
            limit = (
                f"    rate_limit: {{tokens_per_minute: {budget}, store: redis, "
                f'connection: budgets, key_prefix: "{prefix}"}}\n'
            )
        return (
            f"  {name}:\n    type: ai_model\n    endpoint: {fake.url}/v1\n"
            f"    auth: {{type: bearer, token: {API_KEY}}}\n    model: gpt-4o-mini\n"
            f"    retry_policy: {{max_retries: 0}}\n{limit}"
        )

    host, port = redis
    return (
        "server: {access_log: false}\n"
        f"connections:\n  budgets: {{type: redis, host: {host}, port: {port}}}\n"
        "services:\n"
        + service("primary", upstreams[0], BUDGET)
        + service("backup", upstreams[1], backup_budget)
        + "  chat:\n    type: ai_alias\n    default: true\n    deployments: [primary, backup]\n"
        "    retry_policy: {max_retries: 0}\n"
        + (f"    rate_limit: {alias_limit}\n" if alias_limit else "")
    )


def _key(prefix: str, service: str = "primary") -> str:
    return f"{prefix}sidecar:ratelimit:ai:{service}/gpt-4o-mini:tokens"


async def _redis_now(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1e6


async def _bucket(client: aioredis.Redis, key: str) -> tuple[float, float]:
    """The balance stored in the bucket and when it was stored (Redis time)."""
    tokens, ts = await client.hmget(key, ["tokens", "ts"])
    return float(tokens), float(ts)


async def _settled_to(
    client: aioredis.Redis, key: str, done: Callable[[float], bool], within: float = 5.0
) -> tuple[float, float]:
    """The bucket once `done(tokens)` holds (a settlement reaches Redis after the call)."""
    deadline = time.monotonic() + within
    while True:
        tokens, ts = await _bucket(client, key)
        if done(tokens) or time.monotonic() > deadline:
            return tokens, ts
        await asyncio.sleep(0.02)


async def _stream(stub: ai_pb2_grpc.AIServiceStub) -> str:
    call = stub.StreamComplete(
        ai_pb2.StreamCompleteRequest(messages=user(PROMPT), max_tokens=MAX_TOKENS), timeout=20
    )
    messages, error = await read_stream(call)
    assert error is None, error
    return text_of(messages)


async def test_two_sidecars_share_one_budget_and_calls_it_cannot_take_go_to_the_next_deployment(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis_address: tuple[str, int],
    redis_client: aioredis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    primary, backup = upstreams
    for fake in upstreams:
        fake.default = Step(delay=0.01)  # 0.4 s a stream: the calls overlap
    yaml_text = _config(upstreams, redis_address, key_prefix)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    async with (
        sidecar_process(tmp_path / "one", yaml_text) as one,
        sidecar_process(tmp_path / "two", yaml_text) as two,
    ):
        sidecars: list[SidecarProcess] = [one, two]
        started = await _redis_now(redis_client)
        async with (
            grpc.aio.insecure_channel(one.address) as first,
            grpc.aio.insecure_channel(two.address) as second,
        ):
            stubs = [ai_pb2_grpc.AIServiceStub(first), ai_pb2_grpc.AIServiceStub(second)]
            answers: list[str] = []
            for _ in range(2):  # the second wave fits what the first gave back, and no more
                answers += await asyncio.gather(*(_stream(stubs[i % 2]) for i in range(20)))
        assert len(sidecars) == 2
    tokens, stored = await _settled_to(
        redis_client, _key(key_prefix), lambda tokens: tokens >= BUDGET - USED * 20
    )
    elapsed = stored - started
    on_primary, on_backup = len(primary.completions), len(backup.completions)
    used = USED * on_primary
    error = await _reserved() - USED  # one call's estimate error
    assert answers == [" ".join(ANSWER)] * 40
    assert on_primary + on_backup == 40  # every call answered once, none refused
    assert on_primary >= BUDGET // await _reserved()  # the budget was used ...
    assert on_backup >= 40 - on_primary > 0  # ... and what it could not take went on
    assert all(e.tokens_sent == len(ANSWER) for e in primary.completions)
    assert used <= BUDGET + REFILL * elapsed + error  # shared: never twice the budget
    # Reconciled to the real usage: without the refunds the balance would be
    # `error * on_primary` lower.
    assert BUDGET - used - 1 <= tokens <= BUDGET - used + REFILL * elapsed + 1


async def test_a_stream_is_settled_on_the_shared_budget_with_what_it_cost_however_it_ends(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis_address: tuple[str, int],
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    primary, _ = upstreams
    key = _key(key_prefix)
    reserved = await _reserved()
    async with ai_sidecar(_config(upstreams, redis_address, key_prefix)) as ai:
        started = await _redis_now(redis_client)
        assert await _stream(ai.stub) == " ".join(ANSWER)
        tokens, stored = await _settled_to(redis_client, key, lambda t: t >= BUDGET - USED)
        assert BUDGET - USED - 1 <= tokens <= BUDGET - USED + REFILL * (stored - started) + 1

        primary.default = Step(delay=0.05)
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(messages=user(PROMPT), max_tokens=MAX_TOKENS)
        )
        received = 0
        async for _ in call:
            received += 1
            if received == 5:
                break
        call.cancel()
        await asyncio.wait_for(primary.completions[-1].closed.wait(), 5)
        before = tokens + REFILL * (await _redis_now(redis_client) - stored)
        tokens, stored = await _settled_to(redis_client, key, lambda t: t > before - reserved + 1)
    # The cancelled stream cost its prompt (estimated: no usage came) and what was streamed.
    sent = primary.completions[-1].tokens_sent
    prompt = estimate_prompt_tokens(_chat())
    charged = before - tokens
    assert prompt + received - 2 <= charged <= prompt + sent + REFILL * 2
    assert charged < reserved - 10  # not the whole reservation


async def test_when_every_deployment_is_out_of_budget_the_caller_gets_resource_exhausted(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis_address: tuple[str, int],
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    primary, backup = upstreams
    reserved = await _reserved()
    config = _config(upstreams, redis_address, key_prefix, backup_budget=reserved)
    for fake in upstreams:
        fake.default = Step(first_delay=1.0)  # both budgets stay reserved meanwhile
    request = ai_pb2.CompleteRequest(messages=user(PROMPT), max_tokens=MAX_TOKENS)
    async with ai_sidecar(config) as ai:
        # The primary's budget holds BUDGET // reserved calls, the backup's one more.
        calls = [
            asyncio.ensure_future(ai.stub.Complete(request, timeout=10))
            for _ in range(BUDGET // reserved + 1)
        ]
        await asyncio.wait_for(primary.requests_seen(BUDGET // reserved), 10)
        await asyncio.wait_for(backup.requests_seen(1), 10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(request, timeout=2)
        await asyncio.gather(*calls)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    assert error_info(caught.value).metadata["deployments_tried"] == (
        "primary/gpt-4o-mini,backup/gpt-4o-mini"
    )
    delay = retry_delay(caught.value)
    # The soonest any deployment admits again: the primary's refill (it refused at once,
    # not being the last); the backup's own wait was past the 2 s deadline.
    assert delay is not None and 0 < delay < 2
    assert len(primary.completions) == BUDGET // reserved
    assert len(backup.completions) == 1


async def test_each_caller_of_an_alias_has_a_budget_shared_by_every_sidecar(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis_address: tuple[str, int],
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    reserved = await _reserved()
    limit = (
        f'{{store: redis, connection: budgets, key_prefix: "{key_prefix}", '
        f"per_caller: {{tokens_per_minute: {reserved * 3 // 2}}}}}"
    )
    config = _config(upstreams, redis_address, key_prefix, alias_limit=limit)
    request = ai_pb2.CompleteRequest(messages=user(PROMPT), max_tokens=MAX_TOKENS)

    def as_caller(tenant: str) -> tuple[tuple[str, str]]:
        return (("x-tenant-id", tenant),)

    async with ai_sidecar(config) as one, ai_sidecar(config) as two:
        await one.stub.Complete(request, metadata=as_caller("acme"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # 1.5 calls' worth, on Redis
            await two.stub.Complete(request, metadata=as_caller("acme"), timeout=1)
        await two.stub.Complete(request, metadata=as_caller("globex"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await one.stub.Complete(request, metadata=as_caller("acme corp*"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(refused.value)
    assert (info.reason, info.metadata["alias"], info.metadata["caller"]) == (
        "RATE_LIMITED",
        "chat",
        "acme",
    )
    assert (retry_delay(refused.value) or 0) > 1
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(upstreams[0].completions) == 2  # the refused call reached no deployment
    key = f"{key_prefix}sidecar:ratelimit:ai:chat:caller:acme:tokens"
    tokens, _ = await _settled_to(redis_client, key, lambda t: t >= reserved * 3 // 2 - USED)
    assert tokens == pytest.approx(reserved * 3 // 2 - USED, abs=2)  # settled to the usage


async def test_an_alias_budget_spends_what_every_attempt_of_a_call_cost(
    upstreams: tuple[FakeLLM, FakeLLM],
    redis_address: tuple[str, int],
    key_prefix: str,
) -> None:
    primary, backup = upstreams
    primary.then(Step(status=500))  # the first attempt fails: the backup answers
    config = _config(upstreams, redis_address, key_prefix, alias_limit="{tokens_per_minute: 6000}")
    async with ai_sidecar(config) as ai:
        started = time.monotonic()
        reply = await ai.stub.Complete(
            ai_pb2.CompleteRequest(messages=user(PROMPT), max_tokens=MAX_TOKENS), timeout=5
        )
        router = ai.running.servicers["integration.v1.AIService"].router
        limits = router.route("chat").limits
        assert limits is not None
        available = limits.tokens_available()
        elapsed = time.monotonic() - started
    assert reply.deployment == "backup/gpt-4o-mini"
    assert len(primary.completions) == len(backup.completions) == 1
    # The failed attempt cost nothing (refused before any token), the backup's its usage;
    # the bucket refills 100 tokens a second meanwhile (a loaded machine makes it visible).
    assert 6000 - USED - 1 <= available <= 6000 - USED + 1 + 100 * elapsed


def test_a_redis_budget_needs_a_connection() -> None:
    with pytest.raises(ConfigError, match="store: redis needs connection"):
        parse_config(
            "services:\n  llm:\n    type: ai_model\n    provider: echo\n"
            "    rate_limit: {tokens_per_minute: 100, store: redis}\n"
        )


async def test_prompts_are_counted_with_tiktoken_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(path: str) -> bytes:
        raise AssertionError(f"tiktoken tried to fetch {path}")

    read_file = tiktoken.load.read_file
    monkeypatch.setattr(
        tiktoken.load, "read_file", lambda path: offline(path) if "://" in path else read_file(path)
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # loaded afresh, from the wheel
    monkeypatch.setattr(tokenizer, "_loading", {})
    encoding = await load_encoding("o200k_base")
    assert encoding.encode("hello world") == [24912, 2375]
    assert (await load_encoding("cl100k_base")).encode("hello world") == [15339, 1917]
    # Framing as estimated (3 + 4 per message), the text as tiktoken counts it.
    assert await PromptCounter("o200k_base").count(_chat("hello world")) == 3 + 4 + 2
    long = "tokens are counted in a thread " * 200
    assert await PromptCounter("o200k_base").count(_chat(long)) == 7 + len(
        encoding.encode_ordinary(long)
    )


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-davinci-003", None),  # p50k_base: not bundled, estimated
        ("claude-3-5-haiku-latest", None),
        ("fake-model", None),
    ],
)
def test_the_encoding_is_chosen_by_model(model: str, encoding: str | None) -> None:
    assert encoding_for(model) == encoding


async def test_a_sidecar_keeps_the_budgets_of_at_most_max_callers() -> None:
    limits = AliasLimits(per_caller=CallerLimits(tokens_per_minute=100, max_callers=2))
    clock = FakeClock()
    budgets = AliasBudgets("chat", limits, clock)
    for caller in ("a", "b", "a", "c"):  # "b" is the least recently seen when "c" comes
        charge = await budgets.admit(50, caller, None)
        charge.spend(50)
        charge.settle()
    with pytest.raises(ResourceExhausted) as refused:  # "a" is remembered: all spent
        await budgets.admit(50, "a", Deadline.after(1, clock))
    await budgets.admit(
        100, "b", Deadline.after(1, clock)
    )  # "b" was forgotten: a fresh (local) budget
    assert refused.value.metadata == {"alias": "chat", "caller": "a"}


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("acme", True),
        ("org:42/team_a@example.com", True),
        ("", True),  # no caller named: the shared budget of the unnamed
        ("a" * 128, True),
        ("a" * 129, False),
        ("acme corp", False),
        ("acme*", False),
        ("ac\nme", False),
    ],
)
def test_a_caller_value_must_be_fit_for_a_redis_key(value: str, valid: bool) -> None:
    budgets = AliasBudgets("chat", AliasLimits(per_caller=CallerLimits()), FakeClock())
    metadata = [("x-request-id", "r1"), ("x-tenant-id", value)]
    if valid:
        assert budgets.caller_of(metadata) == value
    else:
        with pytest.raises(InvalidArgument):
            budgets.caller_of(metadata)
