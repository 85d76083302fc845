"""Upstream HTTP errors and bad requests as gRPC statuses with ErrorInfo (provider and
upstream status in its metadata) and, where coming back later helps, RetryInfo."""

from __future__ import annotations

import grpc
import pytest
from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, user
from support import error_info, retry_delay

from generated.integration.v1 import ai_pb2

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, Code.INVALID_ARGUMENT, "UPSTREAM_REJECTED"),
        (401, Code.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
        (403, Code.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
        (404, Code.NOT_FOUND, "MODEL_NOT_FOUND"),
        (408, Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        (422, Code.INVALID_ARGUMENT, "UPSTREAM_REJECTED"),
        (429, Code.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
        (500, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (503, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (504, Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_upstream_status_maps_to_code_with_provider_and_status(
    fake: FakeLLM, provider: str, status: int, code: grpc.StatusCode, reason: str
) -> None:
    fake.then(Step(status=status, retry_after=3 if status == 429 else None))
    service = model("llm", fake.url, provider=provider, path="/v1" if provider == "openai" else "")
    async with ai_sidecar(config(service)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="llm", messages=user("hi")))
    error = caught.value
    info = error_info(error)
    assert (error.code(), info.reason, info.domain) == (code, reason, "integration.v1")
    assert info.metadata["provider"] == provider
    assert info.metadata["upstream_status"] == str(status)
    assert info.metadata["deployment"] == "llm/fake-model"
    assert retry_delay(error) == (pytest.approx(3) if status == 429 else None)


async def test_wrong_credentials_are_the_sidecars_problem_and_never_echo_the_key(
    fake: FakeLLM,
) -> None:
    service = model("openai", fake.url).replace("token: test-key", "token: wrong-key")
    async with ai_sidecar(config(service)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
    assert caught.value.code() == Code.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "UPSTREAM_AUTH_FAILED"
    assert "wrong-key" not in str(caught.value)


async def test_an_unreachable_upstream_is_unavailable() -> None:
    service = model("openai", "http://127.0.0.1:9")  # discard port: nothing listens
    async with ai_sidecar(config(service)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
    assert caught.value.code() == Code.UNAVAILABLE
    info = error_info(caught.value)
    assert (info.reason, info.metadata["upstream_status"]) == (
        "UPSTREAM_UNAVAILABLE",
        "unreachable",
    )


async def test_anthropic_has_no_embeddings(fake: FakeLLM) -> None:
    service = model("claude", fake.url, provider="anthropic", path="")
    async with ai_sidecar(config(service)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Embed(ai_pb2.EmbedRequest(target="claude", inputs=["x"]))
    assert caught.value.code() == Code.UNIMPLEMENTED
    assert error_info(caught.value).reason == "UNSUPPORTED_OPERATION"


async def test_an_unknown_target_is_not_found() -> None:
    async with ai_sidecar("server:\n  access_log: false\n") as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(ai_pb2.CompleteRequest(target="nosuch", messages=user("hi")))
    assert caught.value.code() == Code.NOT_FOUND
    assert error_info(caught.value).reason == "TARGET_NOT_FOUND"


async def test_a_model_the_service_does_not_list_is_refused(fake: FakeLLM) -> None:
    service = model("openai", fake.url, extra="models: [gpt-a]")
    async with ai_sidecar(config(service)) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(
                ai_pb2.CompleteRequest(target="openai/gpt-b", messages=user("x"))
            )
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == "target"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ai_pb2.CompleteRequest(), "messages"),
        (ai_pb2.CompleteRequest(messages=[ai_pb2.ChatMessage(content="x")]), "messages[0].role"),
        (
            ai_pb2.CompleteRequest(messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER)]),
            "messages[0].content",
        ),
        (
            ai_pb2.CompleteRequest(
                messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_TOOL, content="42")]
            ),
            "messages[0].tool_call_id",
        ),
        (ai_pb2.CompleteRequest(messages=user("x"), temperature=3), "temperature"),
        (ai_pb2.CompleteRequest(messages=user("x"), top_p=0), "top_p"),
        (ai_pb2.CompleteRequest(messages=user("x"), max_tokens=0), "max_tokens"),
        (ai_pb2.CompleteRequest(messages=user("x"), tools=[ai_pb2.Tool()]), "tools[0].name"),
        (
            ai_pb2.CompleteRequest(
                messages=user("x"),
                tool_choice=ai_pb2.ToolChoice(mode=ai_pb2.TOOL_CHOICE_MODE_FUNCTION),
            ),
            "tool_choice.function_name",
        ),
        (
            ai_pb2.CompleteRequest(
                messages=user("x"),
                response_format=ai_pb2.ResponseFormat(type=ai_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
            ),
            "response_format.json_schema",
        ),
    ],
)
async def test_bad_requests_name_the_field(request_: ai_pb2.CompleteRequest, field: str) -> None:
    async with ai_sidecar("server:\n  access_log: false\n") as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Complete(request_)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert (info.reason, info.metadata["field"]) == ("INVALID_REQUEST", field)


async def test_embed_needs_inputs() -> None:
    async with ai_sidecar("server:\n  access_log: false\n") as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Embed(ai_pb2.EmbedRequest(inputs=["ok", ""]))
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == "inputs[1]"
