"""AIService protos <-> AI domain types, with request validation that names the field.

`CompleteRequest` and `StreamCompleteRequest` have the same fields (a test pins that), so one
function reads both. Every size a caller controls is checked against `sidecar.ai.limits`
while reading, before any work is done for the request. Batches of stream events become as
few `StreamCompleteResponse`s as order allows: text pieces of one batch are joined,
tool-call pieces follow them, and the end rides on the last message.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Final

from google.protobuf import json_format, struct_pb2

from generated.integration.v1 import ai_pb2
from sidecar.ai import limits
from sidecar.ai.fallback import RoutedCall
from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatMessage,
    ChatRequest,
    ContentPart,
    FinishReason,
    ImagePart,
    ImageRequest,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    TranscriptionRequest,
    Usage,
)
from sidecar.errors import ResourceExhausted
from sidecar.observability.call_context import current_call
from sidecar.servicers._common import IDEMPOTENCY_KEY_HEADER, Context, invalid

__all__ = [
    "Assembler",
    "caller_identity",
    "chat_request",
    "check_target",
    "embed_inputs",
    "idempotency_key",
    "image_request",
    "stream_messages",
    "transcription_audio",
    "transcription_config",
]

_DETAILS: Final = frozenset({"", "auto", "low", "high"})
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
_IMAGE_FORMATS: Final[dict[int, Any]] = {
    ai_pb2.IMAGE_FORMAT_UNSPECIFIED: "",
    ai_pb2.IMAGE_FORMAT_BYTES: "b64_json",
    ai_pb2.IMAGE_FORMAT_URL: "url",
}
_IMAGE_SIZE: Final = re.compile(r"\A(?:auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})\Z")
_FINISH: Final = {
    FinishReason.STOP: ai_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: ai_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: ai_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: ai_pb2.FINISH_REASON_CONTENT_FILTER,
}


class _TextBudget:
    """Characters of text one request may still carry (`limits.MAX_TEXT`, all fields)."""

    def __init__(self) -> None:
        self._left = limits.MAX_TEXT

    def take(self, text: str, field: str) -> str:
        self._left -= len(text)
        if self._left < 0:
            raise invalid(field, f"the request holds over {limits.MAX_TEXT} characters of text")
        return text


def _name(value: str, field: str) -> str:
    if len(value) > limits.MAX_NAME:
        raise invalid(field, f"must be at most {limits.MAX_NAME} characters")
    return value


def _at_most(items: Sequence[Any], limit: int, field: str) -> None:
    if len(items) > limit:
        raise invalid(field, f"at most {limit} items")


def _json(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A Struct as plain JSON, whole numbers back as ints (Struct stores every number as a
    double, and `"minimum": 1.0` in a schema reads oddly to an upstream), at most
    `limits.MAX_JSON_DEPTH` levels deep."""

    def fix(value: Any, depth: int) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict | list) and depth > limits.MAX_JSON_DEPTH:
            raise invalid(field, f"nests deeper than {limits.MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            return {k: fix(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v, depth + 1) for v in value]
        return value

    result: dict[str, Any] = fix(json_format.MessageToDict(struct), 1)
    return result


def _known(values: dict[int, Any], number: int, field: str) -> Any:
    """The domain value of an enum number; a number this build does not know (a newer
    client's, or garbage) is the caller's error, not ours."""
    value = values.get(number)
    if value is None:
        raise invalid(field, f"unknown value {number}")
    return value


def _part(part: ai_pb2.ContentPart, where: str, text: _TextBudget) -> ContentPart:
    kind = part.WhichOneof("part")
    if kind == "text":
        return text.take(part.text, f"{where}.text")
    if kind == "image_url" and part.image_url.url:
        if part.image_url.detail not in _DETAILS:
            raise invalid(f"{where}.image_url.detail", "must be low, high, auto or empty")
        url = text.take(part.image_url.url, f"{where}.image_url.url")
        return ImagePart(url, part.image_url.detail or "auto")
    raise invalid(where, "must hold text or an image_url with a url")


def _tool_call(call: ai_pb2.ToolCall, where: str, text: _TextBudget) -> ToolCall:
    return ToolCall(
        _name(call.id, f"{where}.id"),
        _name(call.name, f"{where}.name"),
        text.take(call.arguments, f"{where}.arguments"),
    )


def _message(proto: ai_pb2.ChatMessage, where: str, text: _TextBudget) -> ChatMessage:
    role = _ROLES.get(proto.role)
    if role is None:
        raise invalid(f"{where}.role", "must be system, user, assistant or tool")
    _at_most(proto.parts, limits.MAX_PARTS, f"{where}.parts")
    _at_most(proto.tool_calls, limits.MAX_TOOL_CALLS, f"{where}.tool_calls")
    parts: list[ContentPart] = []
    if proto.content:
        parts.append(text.take(proto.content, f"{where}.content"))
    parts += [_part(part, f"{where}.parts[{i}]", text) for i, part in enumerate(proto.parts)]
    calls = tuple(
        _tool_call(call, f"{where}.tool_calls[{i}]", text)
        for i, call in enumerate(proto.tool_calls)
    )
    if role is Role.TOOL and not proto.tool_call_id:
        raise invalid(f"{where}.tool_call_id", "must be set on tool messages")
    if not parts and not calls:
        raise invalid(f"{where}.content", "must not be empty")
    name = _name(proto.name, f"{where}.name")
    call_id = _name(proto.tool_call_id, f"{where}.tool_call_id")
    return ChatMessage(role, tuple(parts), name, calls, call_id)


def _tool(tool: ai_pb2.Tool, where: str, text: _TextBudget) -> Tool:
    if not tool.name:
        raise invalid(f"{where}.name", "must not be empty")
    parameters = (
        _json(tool.parameters, f"{where}.parameters") if tool.HasField("parameters") else None
    )
    description = text.take(tool.description, f"{where}.description")
    return Tool(_name(tool.name, f"{where}.name"), description, parameters, tool.strict)


def _stop(stop: Sequence[str]) -> tuple[str, ...]:
    _at_most(stop, limits.MAX_STOP, "stop")
    for i, sequence in enumerate(stop):
        if len(sequence) > limits.MAX_STOP_LENGTH:
            raise invalid(f"stop[{i}]", f"must be at most {limits.MAX_STOP_LENGTH} characters")
    return tuple(stop)


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > limits.MAX_METADATA:
        raise invalid("metadata", f"at most {limits.MAX_METADATA} pairs")
    for key, value in metadata.items():
        if len(key) > limits.MAX_METADATA_KEY or len(value) > limits.MAX_METADATA_VALUE:
            raise invalid(
                "metadata",
                f"keys have at most {limits.MAX_METADATA_KEY} characters and values at most "
                f"{limits.MAX_METADATA_VALUE}",
            )
    return dict(metadata)


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
        if not 1 <= request.max_tokens <= limits.MAX_MAX_TOKENS:
            raise invalid("max_tokens", f"must be between 1 and {limits.MAX_MAX_TOKENS}")
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
    _at_most(request.messages, limits.MAX_MESSAGES, "messages")
    _at_most(request.tools, limits.MAX_TOOLS, "tools")
    text = _TextBudget()
    messages = tuple(_message(m, f"messages[{i}]", text) for i, m in enumerate(request.messages))
    tools = tuple(_tool(tool, f"tools[{i}]", text) for i, tool in enumerate(request.tools))
    choice = None
    if request.HasField("tool_choice") and request.tool_choice.mode:
        mode = _known(_CHOICES, request.tool_choice.mode, "tool_choice.mode")
        if mode == "function" and not request.tool_choice.function_name:
            raise invalid("tool_choice.function_name", "must name a tool with mode FUNCTION")
        choice = ToolChoice(
            mode, _name(request.tool_choice.function_name, "tool_choice.function_name")
        )
    fmt = None
    if request.HasField("response_format") and request.response_format.type:
        given = request.response_format
        kind = _known(_FORMATS, given.type, "response_format.type")
        schema_field = "response_format.json_schema"
        schema = _json(given.json_schema, schema_field) if given.HasField("json_schema") else None
        if kind == "json_schema" and schema is None:
            raise invalid(schema_field, "must be set with type JSON_SCHEMA")
        schema_name = _name(given.schema_name, "response_format.schema_name")
        fmt = ResponseFormat(kind, schema_name, schema, given.strict)
    return ChatRequest(
        messages=messages,
        tools=tools,
        tool_choice=choice,
        response_format=fmt,
        stop=_stop(request.stop),
        user=_name(request.user, "user"),
        metadata=_metadata(request.metadata),
        **_sampling(request),
    )


def check_target(target: str) -> str:
    """The target, if it is not too long to be one.

    Raises:
        InvalidArgument: Over `limits.MAX_TARGET` characters.
    """
    if len(target) > limits.MAX_TARGET:
        raise invalid("target", f"must be at most {limits.MAX_TARGET} characters")
    return target


def embed_inputs(request: ai_pb2.EmbedRequest) -> tuple[list[str], int | None]:
    """The inputs and dimensions of an Embed call.

    Raises:
        InvalidArgument: No inputs, too many, an empty one, too much text, or dimensions
            out of range (see `sidecar.ai.limits`).
    """
    inputs = request.inputs
    if not inputs:
        raise invalid("inputs", "must not be empty")
    if len(inputs) > limits.MAX_EMBED_INPUTS:
        raise invalid("inputs", f"at most {limits.MAX_EMBED_INPUTS} inputs per call")
    text = _TextBudget()
    for i, item in enumerate(inputs):
        if not item:
            raise invalid(f"inputs[{i}]", "must not be empty")
        text.take(item, f"inputs[{i}]")
    dimensions = request.dimensions
    if not 0 <= dimensions <= limits.MAX_EMBED_DIMENSIONS:
        raise invalid("dimensions", f"must be between 0 and {limits.MAX_EMBED_DIMENSIONS}")
    if len(inputs) * dimensions > limits.MAX_EMBED_VALUES:
        raise invalid(
            "dimensions",
            f"inputs times dimensions must be at most {limits.MAX_EMBED_VALUES}",
        )
    return list(inputs), dimensions or None


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


def image_request(request: ai_pb2.GenerateImageRequest) -> ImageRequest:
    """The domain request of a GenerateImage call.

    Raises:
        InvalidArgument: A field out of its bound (see `sidecar.ai.limits` and the proto).
    """
    if not request.prompt:
        raise invalid("prompt", "must not be empty")
    if len(request.prompt) > limits.MAX_IMAGE_PROMPT:
        raise invalid("prompt", f"must be at most {limits.MAX_IMAGE_PROMPT} characters")
    if not 0 <= request.n <= limits.MAX_IMAGES:
        raise invalid("n", f"must be between 0 and {limits.MAX_IMAGES}")
    for field in ("size", "quality", "style"):
        if len(getattr(request, field)) > limits.MAX_IMAGE_OPTION:
            raise invalid(field, f"must be at most {limits.MAX_IMAGE_OPTION} characters")
    if request.size and not _IMAGE_SIZE.match(request.size):
        raise invalid("size", 'must be WIDTHxHEIGHT (for example "1024x1024") or "auto"')
    return ImageRequest(
        prompt=request.prompt,
        n=request.n or 1,
        size=request.size,
        quality=request.quality,
        style=request.style,
        response_format=_known(_IMAGE_FORMATS, request.format, "format"),
        user=_name(request.user, "user"),
    )


async def transcription_config(
    messages: AsyncIterator[ai_pb2.TranscribeRequest],
) -> tuple[str, TranscriptionRequest]:
    """The target and settings of a Transcribe stream, from its first message (read here,
    and checked before any more audio is read); `audio` holds that message's piece only.

    Raises:
        InvalidArgument: No first message, no `config` on it, or a field out of its bound.
    """
    first = await anext(messages, None)
    if first is None or not first.HasField("config"):
        raise invalid("config", "must be set on the first message")
    config = first.config
    temperature = config.temperature if config.HasField("temperature") else None
    if temperature is not None and not 0 <= temperature <= 1:
        raise invalid("config.temperature", "must be between 0 and 1")
    if len(config.prompt) > limits.MAX_IMAGE_PROMPT:
        raise invalid("config.prompt", f"must be at most {limits.MAX_IMAGE_PROMPT} characters")
    settings = TranscriptionRequest(
        audio=first.audio,
        filename=_name(config.filename, "config.filename") or "audio.wav",
        content_type=_name(config.content_type, "config.content_type")
        or "application/octet-stream",
        language=_name(config.language, "config.language"),
        prompt=config.prompt,
        temperature=temperature,
    )
    return check_target(config.target), settings


async def transcription_audio(first: bytes, rest: AsyncIterator[ai_pb2.TranscribeRequest]) -> bytes:
    """The whole audio of a Transcribe stream: the first message's piece, then the rest's.

    Raises:
        InvalidArgument: A second `config`, or no audio at all.
        ResourceExhausted: Over `limits.MAX_AUDIO_BYTES` of audio or
            `limits.MAX_AUDIO_MESSAGES` messages (VALUE_TOO_LARGE).
    """
    pieces = [first] if first else []
    size, count = len(first), 1
    async for message in rest:
        count += 1
        if count > limits.MAX_AUDIO_MESSAGES:
            raise _too_large(f"at most {limits.MAX_AUDIO_MESSAGES} messages per call")
        if message.HasField("config"):
            raise invalid("config", "must be set on the first message only")
        size += len(message.audio)
        if size > limits.MAX_AUDIO_BYTES:
            raise _too_large(f"at most {limits.MAX_AUDIO_BYTES} bytes of audio per call")
        if message.audio:
            pieces.append(message.audio)
    if not size:
        raise invalid("audio", "must not be empty")
    return b"".join(pieces)


def _too_large(message: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"audio: {message}", reason="VALUE_TOO_LARGE", metadata={"field": "audio"}
    )


def _metadata_of(context: Context) -> Iterable[tuple[str, str | bytes]]:
    call = current_call()  # the inbound layer already read the metadata
    return call.metadata if call is not None else context.invocation_metadata() or ()


def idempotency_key(context: Context) -> str | None:
    """The call's `idempotency-key` header, or None (a binary value counts as none)."""
    for key, value in _metadata_of(context):
        if key == IDEMPOTENCY_KEY_HEADER and isinstance(value, str):
            return value
    return None


def caller_identity(context: Context) -> str:
    """Who is calling, as far as the server can tell, in a form fit for a key: a digest of
    the bearer token (`t.` + 32 hex; verified when the server checks tokens), else of the
    client certificate's identities (`c.`), else "" (anonymous). Digests, so that no
    credential is ever stored."""
    for key, value in _metadata_of(context):
        if key == "authorization" and isinstance(value, str):
            token = value.partition(" ")[2].strip()
            if token:
                return "t." + hashlib.sha256(token.encode()).hexdigest()[:32]
    identities = sorted(context.auth_context().get("x509_subject_alternative_name", ()))
    if identities:
        return "c." + hashlib.sha256(b"\0".join(identities)).hexdigest()[:32]
    return ""
