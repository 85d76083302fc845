"""AIService protos <-> AI domain types, with request validation that names the field.

`CompleteRequest` and `StreamCompleteRequest` have the same fields (a test pins that), so one
function reads both. Batches of stream events become as few `StreamCompleteResponse`s as
order allows: text pieces of one batch are joined, tool-call pieces follow them, and the
end rides on the last message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from google.protobuf import json_format, struct_pb2

from generated.integration.v1 import ai_pb2
from sidecar.ai.fallback import RoutedCall
from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatMessage,
    ChatRequest,
    ContentPart,
    FinishReason,
    ImagePart,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from sidecar.services._common import invalid

__all__ = [
    "Assembler",
    "chat_request",
    "embed_inputs",
    "stream_messages",
]

MAX_MESSAGES: Final = 10_000
MAX_EMBED_INPUTS: Final = 2048
_ROLES: Final = {
    ai_pb2.ROLE_SYSTEM: Role.SYSTEM,
    ai_pb2.ROLE_USER: Role.USER,
    ai_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    ai_pb2.ROLE_TOOL: Role.TOOL,
}
_CHOICES: Final[dict[int, Any]] = {
    ai_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    ai_pb2.TOOL_CHOICE_MODE_NONE: "none",
    ai_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
    ai_pb2.TOOL_CHOICE_MODE_FUNCTION: "function",
}
_FORMATS: Final[dict[int, Any]] = {
    ai_pb2.RESPONSE_FORMAT_TYPE_TEXT: "text",
    ai_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    ai_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
_FINISH: Final = {
    FinishReason.STOP: ai_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: ai_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: ai_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: ai_pb2.FINISH_REASON_CONTENT_FILTER,
}


def _json(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON, whole numbers back as ints (Struct stores every number as a
    double, and `"minimum": 1.0` in a schema reads oddly to an upstream)."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    result: dict[str, Any] = fix(json_format.MessageToDict(struct))
    return result


def _known(values: dict[int, Any], number: int, field: str) -> Any:
    """The domain value of an enum number; a number this build does not know (a newer
    client's, or garbage) is the caller's error, not ours."""
    value = values.get(number)
    if value is None:
        raise invalid(field, f"unknown value {number}")
    return value


def _message(proto: ai_pb2.ChatMessage, where: str) -> ChatMessage:
    role = _ROLES.get(proto.role)
    if role is None:
        raise invalid(f"{where}.role", "must be system, user, assistant or tool")
    parts: list[ContentPart] = [proto.content] if proto.content else []
    for i, part in enumerate(proto.parts):
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append(part.text)
        elif kind == "image_url" and part.image_url.url:
            parts.append(ImagePart(part.image_url.url, part.image_url.detail or "auto"))
        else:
            raise invalid(f"{where}.parts[{i}]", "must hold text or an image_url with a url")
    calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in proto.tool_calls)
    if role is Role.TOOL and not proto.tool_call_id:
        raise invalid(f"{where}.tool_call_id", "must be set on tool messages")
    if not parts and not calls:
        raise invalid(f"{where}.content", "must not be empty")
    return ChatMessage(role, tuple(parts), proto.name, calls, proto.tool_call_id)


def _sampling(request: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if request.HasField("temperature"):
        if not (math.isfinite(request.temperature) and 0 <= request.temperature <= 2):
            raise invalid("temperature", "must be between 0 and 2")
        values["temperature"] = request.temperature
    if request.HasField("top_p"):
        if not (math.isfinite(request.top_p) and 0 < request.top_p <= 1):
            raise invalid("top_p", "must be greater than 0 and at most 1")
        values["top_p"] = request.top_p
    if request.HasField("max_tokens"):
        if request.max_tokens < 1:
            raise invalid("max_tokens", "must be at least 1")
        values["max_tokens"] = request.max_tokens
    if request.HasField("seed"):
        values["seed"] = request.seed
    return values


def chat_request(request: ai_pb2.CompleteRequest | ai_pb2.StreamCompleteRequest) -> ChatRequest:
    """The domain request of a Complete or StreamComplete call.

    Raises:
        InvalidArgument: A field is missing or out of range (named in the error).
    """
    if not request.messages:
        raise invalid("messages", "must not be empty")
    if len(request.messages) > MAX_MESSAGES:
        raise invalid("messages", f"at most {MAX_MESSAGES} messages")
    messages = tuple(_message(m, f"messages[{i}]") for i, m in enumerate(request.messages))
    tools = []
    for i, tool in enumerate(request.tools):
        if not tool.name:
            raise invalid(f"tools[{i}].name", "must not be empty")
        parameters = _json(tool.parameters) if tool.HasField("parameters") else None
        tools.append(Tool(tool.name, tool.description, parameters, tool.strict))
    choice = None
    if request.HasField("tool_choice") and request.tool_choice.mode:
        mode = _known(_CHOICES, request.tool_choice.mode, "tool_choice.mode")
        if mode == "function" and not request.tool_choice.function_name:
            raise invalid("tool_choice.function_name", "must name a tool with mode FUNCTION")
        choice = ToolChoice(mode, request.tool_choice.function_name)
    fmt = None
    if request.HasField("response_format") and request.response_format.type:
        given = request.response_format
        kind = _known(_FORMATS, given.type, "response_format.type")
        schema = _json(given.json_schema) if given.HasField("json_schema") else None
        if kind == "json_schema" and schema is None:
            raise invalid("response_format.json_schema", "must be set with type JSON_SCHEMA")
        fmt = ResponseFormat(kind, given.schema_name, schema, given.strict)
    return ChatRequest(
        messages=messages,
        tools=tuple(tools),
        tool_choice=choice,
        response_format=fmt,
        stop=tuple(request.stop),
        user=request.user,
        metadata=dict(request.metadata),
        **_sampling(request),
    )


def embed_inputs(request: ai_pb2.EmbedRequest) -> tuple[list[str], int | None]:
    """The inputs and dimensions of an Embed call.

    Raises:
        InvalidArgument: No inputs, too many, an empty one, or negative dimensions.
    """
    if not request.inputs:
        raise invalid("inputs", "must not be empty")
    if len(request.inputs) > MAX_EMBED_INPUTS:
        raise invalid("inputs", f"at most {MAX_EMBED_INPUTS} inputs per call")
    for i, text in enumerate(request.inputs):
        if not text:
            raise invalid(f"inputs[{i}]", "must not be empty")
    if request.dimensions < 0:
        raise invalid("dimensions", "must not be negative")
    return list(request.inputs), request.dimensions or None


def usage_proto(usage: Usage | None) -> ai_pb2.Usage | None:
    """Usage as a proto, or None when the upstream reported none."""
    if usage is None:
        return None
    return ai_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


def end_proto(end: ChatEnd, call: RoutedCall) -> ai_pb2.CompletionEnd:
    """The closing message of a stream."""
    return ai_pb2.CompletionEnd(
        finish_reason=_FINISH[end.finish_reason],
        usage=usage_proto(end.usage),
        model=end.model,
        deployment=call.deployment,
        cached=call.cached,
        id=end.response_id,
    )


def stream_messages(
    batch: Sequence[ChatEvent], call: RoutedCall
) -> list[ai_pb2.StreamCompleteResponse]:
    """The messages for one batch, in order; text pieces of the batch are joined."""
    if len(batch) == 1 and type(batch[0]) is str:  # the common case: one token
        return [ai_pb2.StreamCompleteResponse(content=batch[0])]
    messages: list[ai_pb2.StreamCompleteResponse] = []
    text: list[str] = []
    deltas: list[ai_pb2.ToolCallDelta] = []
    for event in batch:
        if isinstance(event, str):
            if deltas:  # text after tool pieces must not overtake them
                messages.append(
                    ai_pb2.StreamCompleteResponse(content="".join(text), tool_calls=deltas)
                )
                text, deltas = [], []
            text.append(event)
        elif isinstance(event, ToolCallDelta):
            deltas.append(
                ai_pb2.ToolCallDelta(
                    index=event.index, id=event.id, name=event.name, arguments=event.arguments
                )
            )
        else:
            messages.append(
                ai_pb2.StreamCompleteResponse(
                    content="".join(text), tool_calls=deltas, end=end_proto(event, call)
                )
            )
            return messages
    if text or deltas:
        messages.append(ai_pb2.StreamCompleteResponse(content="".join(text), tool_calls=deltas))
    return messages


class Assembler:
    """Builds the whole answer of a Complete call from the stream's batches."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._ids: dict[int, tuple[str, str]] = {}
        self.end: ChatEnd | None = None

    def add(self, batch: Sequence[ChatEvent]) -> None:
        """Take in one batch."""
        for event in batch:
            if isinstance(event, str):
                self._text.append(event)
            elif isinstance(event, ToolCallDelta):
                call_id, name = self._ids.get(event.index, ("", ""))
                self._ids[event.index] = (event.id or call_id, event.name or name)
                self._calls.setdefault(event.index, []).append(event.arguments)
            else:
                self.end = event

    def response(self, call: RoutedCall) -> ai_pb2.CompleteResponse:
        """The CompleteResponse (the stream must have ended)."""
        end = self.end
        assert end is not None, "the stream ended without ChatEnd"
        return ai_pb2.CompleteResponse(
            content="".join(self._text),
            tool_calls=[
                ai_pb2.ToolCall(id=self._ids[i][0], name=self._ids[i][1], arguments="".join(parts))
                for i, parts in sorted(self._calls.items())
            ],
            finish_reason=_FINISH[end.finish_reason],
            usage=usage_proto(end.usage),
            model=end.model,
            deployment=call.deployment,
            cached=call.cached,
            id=end.response_id,
        )
