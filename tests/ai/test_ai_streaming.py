"""Streamed and whole completions through the real server and the real SDKs, against local
upstreams speaking OpenAI's, Anthropic's and TGI's streaming formats."""

from __future__ import annotations

import json

from ai.fake_llm import FakeLLM
from ai.helpers import ai_sidecar, config, model, read_stream, text_of, user
from google.protobuf import struct_pb2

from generated.integration.v1 import ai_pb2


async def test_openai_stream_arrives_complete_in_order_with_usage(fake: FakeLLM) -> None:
    fake.words = [f"w{i}" for i in range(50)]
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="openai", messages=user("count for me"))
        )
        messages, error = await read_stream(call)
    assert error is None
    assert text_of(messages) == " ".join(f"w{i}" for i in range(50))
    end = messages[-1].end
    assert [m.HasField("end") for m in messages].count(True) == 1 and messages[-1].HasField("end")
    assert end.finish_reason == ai_pb2.FINISH_REASON_STOP
    assert (end.usage.input_tokens, end.usage.output_tokens, end.usage.total_tokens) == (6, 50, 56)
    assert (end.model, end.deployment, end.id) == (
        "fake-model",
        "openai/fake-model",
        "chatcmpl-fake",
    )


async def test_upstream_receives_the_openai_request_shape_with_defaults(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        await ai.stub.Complete(
            ai_pb2.CompleteRequest(
                target="openai", messages=user("hi"), stop=["\n"], seed=7, metadata={"k": "v"}
            )
        )
    sent = fake.completions[0].request
    body = sent.json()
    assert sent.headers["authorization"] == "Bearer test-key"
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == (
        0.7,
        2048,
        ["\n"],
        7,
    )
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "metadata" not in body and "store" not in body  # OpenAI takes metadata only with store


async def test_complete_returns_the_whole_answer(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        reply = await ai.stub.Complete(ai_pb2.CompleteRequest(target="openai", messages=user("hi")))
    assert reply.content == "Hello from the fake model."
    assert reply.finish_reason == ai_pb2.FINISH_REASON_STOP
    assert reply.usage.output_tokens == 5 and reply.deployment == "openai/fake-model"


async def test_tool_call_deltas_stream_after_the_text_and_assemble_in_complete(
    fake: FakeLLM,
) -> None:
    fake.tool_call = ("get_weather", '{"city": "Paris"}')
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}})
    tool = ai_pb2.Tool(name="get_weather", description="Weather now", parameters=schema)
    choice = ai_pb2.ToolChoice(mode=ai_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="get_weather")
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        streamed, _ = await read_stream(
            ai.stub.StreamComplete(
                ai_pb2.StreamCompleteRequest(
                    target="openai", messages=user("weather?"), tools=[tool], tool_choice=choice
                )
            )
        )
        whole = await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="openai", messages=user("weather?"), tools=[tool])
        )
    deltas = [delta for message in streamed for delta in message.tool_calls]
    assert (deltas[0].id, deltas[0].name) == ("call_fake", "get_weather")
    assert "".join(d.arguments for d in deltas) == '{"city": "Paris"}'
    assert streamed[-1].end.finish_reason == ai_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.id, c.name, c.arguments) for c in whole.tool_calls] == [
        ("call_fake", "get_weather", '{"city": "Paris"}')
    ]
    body = fake.completions[0].request.json()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


async def test_anthropic_events_map_onto_the_same_deltas(fake: FakeLLM) -> None:
    fake.tool_call = ("lookup", '{"q": "x"}')
    service = model("claude", fake.url, provider="anthropic", path="")
    messages = [
        ai_pb2.ChatMessage(role=ai_pb2.ROLE_SYSTEM, content="Be brief."),
        *user("hello"),
    ]
    async with ai_sidecar(config(service)) as ai:
        streamed, error = await read_stream(
            ai.stub.StreamComplete(ai_pb2.StreamCompleteRequest(target="claude", messages=messages))
        )
    assert error is None
    assert text_of(streamed) == "Hello from the fake model."
    deltas = [delta for message in streamed for delta in message.tool_calls]
    assert (deltas[0].id, deltas[0].name, deltas[-1].arguments) == (
        "toolu_fake",
        "lookup",
        '{"q": "x"}',
    )
    end = streamed[-1].end
    assert end.finish_reason == ai_pb2.FINISH_REASON_TOOL_CALLS
    assert (end.usage.input_tokens, end.usage.output_tokens) == (6, 5)
    sent = fake.completions[0].request
    assert sent.path == "/v1/messages"
    # The SDK sends the key as x-api-key or as a Bearer token; the fake accepts either.
    sent_key = sent.headers.get("x-api-key") or sent.headers.get("authorization", "")
    assert sent_key.removeprefix("Bearer ") == "test-key"
    body = sent.json()
    assert body["system"] == "Be brief." and body["messages"][0]["role"] == "user"


async def test_huggingface_tgi_stream_and_feature_extraction(fake: FakeLLM) -> None:
    service = model("hf", fake.url, provider="huggingface", path="/hf/models/{model}")
    async with ai_sidecar(config(service)) as ai:
        reply = await ai.stub.Complete(ai_pb2.CompleteRequest(target="hf", messages=user("hi")))
        vectors = await ai.stub.Embed(ai_pb2.EmbedRequest(target="hf", inputs=["a", "b"]))
    assert reply.content == "Hello from the fake model."
    assert reply.finish_reason == ai_pb2.FINISH_REASON_STOP and reply.usage.output_tokens == 5
    sent = fake.completions[0].request
    assert sent.path == "/hf/models/fake-model"
    assert sent.json()["parameters"]["max_new_tokens"] == 2048
    assert [len(e.values) for e in vectors.embeddings] == [4, 4]


async def test_openai_embeddings_keep_input_order(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        reply = await ai.stub.Embed(
            ai_pb2.EmbedRequest(target="openai", inputs=["one", "two", "three"], dimensions=3)
        )
    assert [e.index for e in reply.embeddings] == [0, 1, 2]
    assert all(len(e.values) == 3 for e in reply.embeddings)
    assert reply.usage.input_tokens == 3 and reply.deployment == "openai/fake-model"


async def test_echo_default_streams_the_last_user_message_word_by_word() -> None:
    async with ai_sidecar("server:\n  access_log: false\n") as ai:
        messages, error = await read_stream(
            ai.stub.StreamComplete(ai_pb2.StreamCompleteRequest(messages=user("hello there world")))
        )
        first = await ai.stub.Embed(ai_pb2.EmbedRequest(inputs=["same"]))
        second = await ai.stub.Embed(ai_pb2.EmbedRequest(inputs=["same"]))
    assert error is None
    assert [m.content for m in messages[:3]] == ["hello ", "there ", "world"]
    assert messages[-1].end.deployment == "echo/echo"
    assert first.embeddings[0].values == second.embeddings[0].values


async def test_list_models_shows_aliases_and_services(fake: FakeLLM) -> None:
    alias = "  chat:\n    type: ai_alias\n    deployments: [openai/gpt-x, openai]\n"
    async with ai_sidecar(config(model("openai", fake.url), alias)) as ai:
        listed = await ai.stub.ListModels(ai_pb2.ListModelsRequest())
    shown = {m.target: (m.kind, list(m.deployments), m.default) for m in listed.models}
    assert shown == {
        "chat": (ai_pb2.MODEL_KIND_ALIAS, ["openai/gpt-x", "openai/fake-model"], True),
        "openai": (ai_pb2.MODEL_KIND_SERVICE, ["openai/fake-model"], False),
    }


def test_complete_and_stream_requests_have_the_same_fields() -> None:
    def fields(message: object) -> list[tuple[str, int, int]]:
        descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
        return [(f.name, f.number, f.type) for f in descriptor.fields]

    assert fields(ai_pb2.CompleteRequest) == fields(ai_pb2.StreamCompleteRequest)


def test_fake_openai_chunks_are_the_exact_wire_format() -> None:
    fake = FakeLLM(["Hi"])
    events = fake._openai_events(
        {"model": "m", "messages": [], "stream_options": {"include_usage": True}}
    )
    first = json.loads(events[1].removeprefix(b"data: "))
    assert first["object"] == "chat.completion.chunk" and first["usage"] is None
    assert first["choices"] == [
        {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
    ]
    assert json.loads(events[-2].removeprefix(b"data: "))["choices"] == []
    assert events[-1] == b"data: [DONE]\n\n"
