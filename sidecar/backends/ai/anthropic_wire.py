"""The Anthropic Messages API wire format: request bodies, and streaming events mapped onto
the same deltas as OpenAI's.

Differences the mapping absorbs:

- System messages become the top-level `system` text; tool results are `tool_result`
  blocks inside a user turn; assistant tool calls are `tool_use` blocks with parsed input.
- `tool_choice` required is Anthropic's `any`; temperature is capped at 1 (Anthropic's
  range is 0-1, OpenAI's 0-2); `seed` has no equivalent and is not sent.
- JSON response formats have no native switch; the instruction (and the schema) is
  appended to the system text.
- Events: `message_start` (id, model, input tokens), `content_block_start` (a text block, or
  a `tool_use` block with id and name), `content_block_delta` (`text_delta`, or an
  `input_json_delta` of the tool's argument JSON), `message_delta` (stop reason, output
  tokens), `message_stop` (the end), plus `ping` and `error`.
"""

from __future__ import annotations

import json
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

__all__ = ["EventParser", "messages_body"]

_STOP = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
_DEFAULT_MAX_TOKENS = 1024  # Anthropic requires one; config defaults normally supply it


def _image(part: ImagePart) -> dict[str, Any]:
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": part} if isinstance(part, str) else _image(part)
        for part in message.content
        if not (isinstance(part, str) and not part)
    ]
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except ValueError:
            arguments = {"arguments": call.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _turns(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.TOOL:
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.text,
                }
            ]
        else:
            role = message.role.value
            blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic alternates user and assistant
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def messages_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The streaming `/v1/messages` body for a request."""
    body: dict[str, Any] = {
        "model": model,
        "messages": _turns(request.messages),
        "max_tokens": request.max_tokens or _DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    system = [m.text for m in request.messages if m.role is Role.SYSTEM]
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        instruction = "Respond with a single JSON object and nothing else."
        if fmt.type == "json_schema" and fmt.schema:
            instruction += " It must match this JSON schema: " + json.dumps(fmt.schema)
        system.append(instruction)
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": dict(tool.parameters or {"type": "object", "properties": {}}),
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = {
            "auto": {"type": "auto"},
            "none": {"type": "none"},
            "required": {"type": "any"},
            "function": {"type": "tool", "name": choice.name},
        }[choice.mode]
    return body


class EventParser:
    """Maps one Messages stream onto `ChatEvent`s; complete only at `message_stop`."""

    __slots__ = ("_id", "_input", "_model", "_output", "_stop", "_tools")

    def __init__(self) -> None:
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._input = 0
        self._output = 0
        self._stop: str | None = None
        self._model = ""
        self._id = ""

    def feed(self, event: bytes, payload: bytes, batch: list[ChatEvent]) -> bool:
        """Append the events of one SSE event to `batch`; True at `message_stop`.

        Raises:
            ValueError: An `error` event (for example `overloaded_error`) or bad JSON.
        """
        data = json.loads(payload)
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data["delta"]
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if text:
                    batch.append(text)
            elif delta.get("type") == "input_json_delta":
                index = self._tools.get(data.get("index", 0), 0)
                batch.append(ToolCallDelta(index, arguments=delta.get("partial_json", "")))
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[data.get("index", 0)] = len(self._tools)
                batch.append(ToolCallDelta(index, block.get("id", ""), block.get("name", "")))
            elif block.get("text"):
                batch.append(block["text"])
        elif kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id", "")
            self._model = message.get("model", "")
            self._count(message.get("usage"))
        elif kind == "message_delta":
            self._stop = (data.get("delta") or {}).get("stop_reason") or self._stop
            self._count(data.get("usage"))
        elif kind == "message_stop":
            usage = Usage(self._input, self._output)
            stop = _STOP.get(self._stop or "end_turn", FinishReason.STOP)
            batch.append(ChatEnd(stop, usage, self._model, self._id))
            return True
        elif kind == "error":
            error = data.get("error") or {}
            raise ValueError(f"{error.get('type', 'error')}: {error.get('message', '')}")
        return False

    def end_of_stream(self) -> ChatEnd | None:
        """Without `message_stop` the answer is incomplete."""
        return None

    def _count(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        inputs = sum(
            int(usage.get(key) or 0)
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        if inputs:
            self._input = inputs
        if usage.get("output_tokens") is not None:
            self._output = int(usage["output_tokens"])
