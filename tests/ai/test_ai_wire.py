"""Request shaping and event parsing of the provider wire formats, without a network."""

from __future__ import annotations

import json

import pytest

from sidecar.backends.ai.anthropic_wire import EventParser, messages_body
from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatMessage,
    ChatRequest,
    FinishReason,
    ImagePart,
    ResponseFormat,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from sidecar.backends.ai.openai_wire import ChunkParser, chat_body

CONVERSATION = (
    ChatMessage(Role.SYSTEM, ("Be brief.",)),
    ChatMessage(Role.USER, ("What is this?", ImagePart("https://x/cat.png", "low"))),
    ChatMessage(Role.ASSISTANT, (), tool_calls=(ToolCall("c1", "look", '{"at": "cat"}'),)),
    ChatMessage(Role.TOOL, ("a cat",), tool_call_id="c1"),
)


def test_openai_body_keeps_images_tool_calls_and_tool_results() -> None:
    body = chat_body(ChatRequest(CONVERSATION, temperature=0.2), "gpt")
    assert body["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/cat.png", "detail": "low"},
    }
    assert body["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "look", "arguments": '{"at": "cat"}'},
            }
        ],
    }
    assert body["messages"][3] == {"role": "tool", "content": "a cat", "tool_call_id": "c1"}


def test_openai_json_schema_response_format() -> None:
    fmt = ResponseFormat("json_schema", "answer", {"type": "object"}, strict=True)
    body = chat_body(ChatRequest(CONVERSATION[:2], response_format=fmt), "gpt")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }


def test_openai_metadata_is_sent_only_with_store_which_openai_requires_for_it() -> None:
    request = ChatRequest(CONVERSATION[:2], metadata={"team": "search"})
    plain = chat_body(request, "gpt")
    stored = chat_body(request, "gpt", store=True)
    assert "metadata" not in plain and "store" not in plain
    assert (stored["store"], stored["metadata"]) == (True, {"team": "search"})


def test_anthropic_body_moves_system_and_tool_results_into_place() -> None:
    request = ChatRequest(
        CONVERSATION,
        temperature=1.5,
        tool_choice=ToolChoice("required"),
        response_format=ResponseFormat("json_object"),
    )
    body = messages_body(request, "claude")
    assert body["system"].startswith("Be brief.") and "JSON" in body["system"]
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert body["tool_choice"] == {"type": "any"}
    assert [turn["role"] for turn in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://x/cat.png"},
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "look", "input": {"at": "cat"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "a cat"}
    ]


def _feed(
    parser: ChunkParser | EventParser, payloads: list[dict[str, object] | bytes]
) -> list[ChatEvent]:
    batch: list[ChatEvent] = []
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        parser.feed(b"", data, batch)
    return batch


def test_openai_finish_and_usage_from_separate_chunks_make_one_end() -> None:
    events = _feed(
        ChunkParser(),
        [
            {"id": "r1", "model": "m", "choices": [{"delta": {"content": "Hi"}}]},
            {"choices": [{"delta": {}, "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
            b"[DONE]",
        ],
    )
    assert events == ["Hi", ChatEnd(FinishReason.LENGTH, Usage(3, 1), "m", "r1")]


def test_openai_error_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="overloaded"):
        _feed(ChunkParser(), [{"error": {"message": "overloaded"}}])


def test_anthropic_tool_use_blocks_become_numbered_tool_call_deltas() -> None:
    events = _feed(
        EventParser(),
        [
            {
                "type": "message_start",
                "message": {"id": "m1", "model": "c", "usage": {"input_tokens": 9}},
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "f"},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{}"},
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 4},
            },
            {"type": "message_stop"},
        ],
    )
    assert events == [
        "ok",
        ToolCallDelta(0, "t1", "f"),
        ToolCallDelta(0, arguments="{}"),
        ChatEnd(FinishReason.TOOL_CALLS, Usage(9, 4), "c", "m1"),
    ]


def test_anthropic_error_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="overloaded_error"):
        _feed(
            EventParser(),
            [{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}],
        )
