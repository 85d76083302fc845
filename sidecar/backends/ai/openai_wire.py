"""The OpenAI chat-completions wire format: request bodies and streamed chunk parsing.

Kept apart from the client (`openai.py`) so the format can be read, and tested, on its own,
and so it never imports the SDK. Every OpenAI-compatible server (Azure OpenAI, vLLM, Ollama,
TGI's Messages API, Together, Groq, ...) speaks it.

The stream parser reads `choices[0].delta` and `usage` straight from `json.loads` output:
no SDK objects are built per chunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatMessage,
    ChatRequest,
    FinishReason,
    ImagePart,
    Role,
    ToolCallDelta,
    Usage,
)

__all__ = ["ChunkParser", "chat_body", "finish_reason", "message_json"]

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
    # TGI and some other compatible servers report these:
    "eos_token": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
}


def finish_reason(value: str | None) -> FinishReason:
    """The finish reason for an upstream value; unknown ones count as a normal stop."""
    return _FINISH.get(value or "stop", FinishReason.STOP)


def message_json(message: ChatMessage) -> dict[str, Any]:
    """One message in OpenAI's shape (plain string content when there are no images)."""
    out: dict[str, Any] = {"role": message.role.value}
    parts = message.content
    if any(isinstance(part, ImagePart) for part in parts):
        out["content"] = [
            {"type": "text", "text": part}
            if isinstance(part, str)
            else {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
            for part in parts
        ]
    elif message.role is Role.ASSISTANT and message.tool_calls and not parts:
        out["content"] = None
    else:
        out["content"] = message.text
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def chat_body(request: ChatRequest, model: str, *, store: bool = False) -> dict[str, Any]:
    """The streaming request body; usage is asked for so token budgets settle exactly.

    `store` asks OpenAI to keep the completion (for evals and distillation); only then is
    the request's metadata sent, since OpenAI refuses metadata without it (HTTP 400).
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_json(message) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.user:
        body["user"] = request.user
    if store:
        body["store"] = True
        if request.metadata:
            body["metadata"] = dict(request.metadata)
    if request.tools:
        body["tools"] = [
            _tool_json(tool.name, tool.description, tool.parameters, tool.strict)
            for tool in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "function"
            else choice.mode
        )
    fmt = request.response_format
    if fmt is not None:
        if fmt.type == "json_schema":
            schema: dict[str, Any] = {
                "name": fmt.name or "response",
                "schema": dict(fmt.schema or {}),
            }
            if fmt.strict:
                schema["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": fmt.type}
    return body


def _tool_json(
    name: str, description: str, parameters: Mapping[str, Any] | None, strict: bool
) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = (
        dict(parameters) if parameters else {"type": "object", "properties": {}}
    )
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


class ChunkParser:
    """Turns the `data:` payloads of one stream into events.

    The finish reason arrives in one chunk and the usage in a later, choice-less one; the
    `ChatEnd` is emitted at `[DONE]` (or at a clean end of stream after a finish reason).
    """

    __slots__ = ("finish", "model", "response_id", "usage")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.model = ""
        self.response_id = ""

    def feed(self, event: bytes, payload: bytes, batch: list[ChatEvent]) -> bool:
        """Append the events of one `data:` payload to `batch`; True once the stream is done.

        Raises:
            ValueError: The payload is not JSON, or is an error event (its message is
                the exception text).
        """
        if payload == b"[DONE]":
            batch.append(self.end())
            return True
        chunk = json.loads(payload)
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise ValueError(f"error event: {message}")
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    batch.append(content)
                calls = delta.get("tool_calls")
                if calls:
                    for call in calls:
                        function = call.get("function") or {}
                        batch.append(
                            ToolCallDelta(
                                call.get("index", 0),
                                call.get("id") or "",
                                function.get("name") or "",
                                function.get("arguments") or "",
                            )
                        )
            reason = choice.get("finish_reason")
            if reason:
                self.finish = reason
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        if not self.response_id:
            self.response_id = chunk.get("id") or ""
            self.model = chunk.get("model") or ""
        return False

    def end(self) -> ChatEnd:
        """The closing event from what the stream said so far."""
        return ChatEnd(finish_reason(self.finish), self.usage, self.model, self.response_id)

    def end_of_stream(self) -> ChatEnd | None:
        """A body ending without `[DONE]` is complete only if a finish reason came."""
        return self.end() if self.finish else None
