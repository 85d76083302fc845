"""Conformance suite of the AI providers: every provider streams and completes the same
answer with its usage, and every provider with an upstream maps that upstream's rate limit,
failure and broken stream to the same gRPC answers. Each runs through the real server
against the local fake upstream, which speaks each provider's own wire format."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, read_stream, text_of, user
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2


@dataclass(frozen=True)
class Provider:
    """One provider and where its API sits on the fake upstream (None: no upstream)."""

    name: str
    path: str | None


# ==== the providers: one row each ===========================================================
PROVIDERS = (
    Provider("openai", "/v1"),
    Provider("anthropic", ""),
    Provider("huggingface", "/hf/models/{model}"),
    Provider("echo", None),
)
# ==== end of the providers ==================================================================
UPSTREAM = [provider for provider in PROVIDERS if provider.path is not None]


def service(provider: Provider, fake: FakeLLM) -> str:
    if provider.path is None:
        return f"  llm: {{type: ai_model, provider: {provider.name}}}\n"
    return model("llm", fake.url, provider=provider.name, path=provider.path)


def expected_text(provider: Provider) -> str:
    return "hi there" if provider.path is None else "Hello from the fake model."


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_a_stream_arrives_whole_then_ends_with_its_usage(
    provider: Provider, fake: FakeLLM
) -> None:
    async with ai_sidecar(config(service(provider, fake))) as ai:
        streamed, error = await read_stream(
            ai.stub.StreamComplete(
                ai_pb2.StreamCompleteRequest(target="llm", messages=user("hi there"))
            )
        )
    assert error is None
    assert text_of(streamed) == expected_text(provider)
    end = streamed[-1].end
    assert end.finish_reason == ai_pb2.FINISH_REASON_STOP
    assert end.usage.output_tokens > 0 and end.usage.input_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_complete_returns_the_same_answer_as_the_stream(
    provider: Provider, fake: FakeLLM
) -> None:
    async with ai_sidecar(config(service(provider, fake))) as ai:
        reply = await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="llm", messages=user("hi there"))
        )
    assert reply.content == expected_text(provider)
    assert reply.finish_reason == ai_pb2.FINISH_REASON_STOP and reply.usage.output_tokens > 0


@pytest.mark.parametrize("provider", UPSTREAM, ids=lambda p: p.name)
async def test_an_upstream_rate_limit_is_resource_exhausted_with_its_retry_after(
    provider: Provider, fake: FakeLLM
) -> None:
    fake.then(Step(status=429, retry_after=3))
    async with ai_sidecar(config(service(provider, fake))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="llm", messages=user("hi")))
    info = error_info(caught.value)
    assert (caught.value.code(), info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
    )
    assert (info.metadata["provider"], info.metadata["upstream_status"]) == (provider.name, "429")
    assert retry_delay(caught.value) == pytest.approx(3)


@pytest.mark.parametrize("provider", UPSTREAM, ids=lambda p: p.name)
async def test_an_upstream_failure_is_unavailable(provider: Provider, fake: FakeLLM) -> None:
    fake.then(Step(status=503))
    async with ai_sidecar(config(service(provider, fake))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="llm", messages=user("hi")))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "UPSTREAM_UNAVAILABLE"


@pytest.mark.parametrize("provider", UPSTREAM, ids=lambda p: p.name)
async def test_a_stream_cut_after_output_ends_interrupted_keeping_what_was_sent(
    provider: Provider, fake: FakeLLM
) -> None:
    fake.then(Step(cut_after=2))
    async with ai_sidecar(config(service(provider, fake))) as ai:
        streamed, error = await read_stream(
            ai.stub.StreamComplete(ai_pb2.StreamCompleteRequest(target="llm", messages=user("hi")))
        )
    assert error is not None
    assert error_info(error).reason == "STREAM_INTERRUPTED"
    assert "Hello from the fake model.".startswith(text_of(streamed))
    assert len(fake.completions) == 1  # output went out: never retried
