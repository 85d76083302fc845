"""The AI capability's domain types and the `ChatProvider` interface every provider implements.

No protobuf and no SDK types cross this line: the servicer converts protos into these frozen
dataclasses, the router picks a deployment, and a provider (openai, anthropic, huggingface,
echo) turns them into its wire format and its stream back into `ChatEvent`s.

A stream is read in *batches*: each network read yields the events it completed. That keeps
the per-chunk cost low (no task switch per token) and lets the servicer merge the content of
one batch into one gRPC message when a client reads slower than the upstream writes.

Event kinds, in the order a stream delivers them:

    str             a piece of answer text
    ToolCallDelta   a piece of a tool call (name first, then argument JSON in pieces)
    ChatEnd         the last event: finish reason, token usage, upstream model and id

Usage:

    stream = await provider.open_stream(request, "gpt-4o-mini", UpstreamTimeouts(10, 30))
    try:
        async for batch in stream:
            for event in batch:
                ...
    finally:
        await stream.aclose()          # closes the upstream HTTP response at once
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChatEnd",
    "ChatEvent",
    "ChatMessage",
    "ChatProvider",
    "ChatRequest",
    "ChatStream",
    "EmbedResult",
    "FinishReason",
    "GeneratedImage",
    "ImagePart",
    "ImageRequest",
    "ImageResult",
    "MediaProvider",
    "ResponseFormat",
    "Role",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "TranscriptionRequest",
    "TranscriptionResult",
    "UpstreamTimeouts",
    "Usage",
]


class Role(enum.Enum):
    """Who wrote a chat message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(enum.Enum):
    """Why the model stopped."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image given by URL (https or a data: URL); `detail` is low, high or auto."""

    url: str
    detail: str = "auto"


ContentPart = str | ImagePart
"""A text part (plain `str`, the common case, kept cheap) or an image."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call the assistant made; `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation."""

    role: Role
    content: tuple[ContentPart, ...] = ()
    name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    @property
    def text(self) -> str:
        """The text parts joined (images left out)."""
        return "".join(part for part in self.content if isinstance(part, str))


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether the model may, must or must not call tools, or which one it must call."""

    mode: Literal["auto", "none", "required", "function"]
    name: str = ""


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Plain text, any JSON object, or JSON following `schema`."""

    type: Literal["text", "json_object", "json_schema"]
    name: str = ""
    schema: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request, with the model defaults already applied.

    The upstream model is not part of the request: the router picks a deployment and passes
    its model to the provider, so one request can fall back across providers unchanged.
    """

    messages: tuple[ChatMessage, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the upstream counted (or the provider estimated when it counts none)."""

    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        """Input plus output."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call `index`: the id and name come first, then argument JSON pieces."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChatEnd:
    """How the answer ended; always the last event of a complete stream."""

    finish_reason: FinishReason
    usage: Usage | None
    model: str = ""
    response_id: str = ""


ChatEvent = str | ToolCallDelta | ChatEnd


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Per-request HTTP timeouts; the caller's deadline is enforced above, by the router.

    Attributes:
        connect: Seconds to establish a connection.
        read: Seconds to wait for the next bytes (the gap between two chunks of a stream).
    """

    connect: float | None = 10.0
    read: float | None = 30.0


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """One vector per input, in input order."""

    vectors: Sequence[Sequence[float]]
    model: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """Images of `prompt`; empty strings and None leave the upstream's default."""

    prompt: str
    n: int = 1
    size: str = ""
    quality: str = ""
    style: str = ""
    response_format: Literal["", "b64_json", "url"] = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image: its bytes or the URL the upstream hosts it at."""

    data: bytes = b""
    url: str = ""
    revised_prompt: str = ""


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The images, in the upstream's order."""

    images: Sequence[GeneratedImage]
    model: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """One whole audio file to turn into text."""

    audio: bytes
    filename: str = "audio.wav"
    content_type: str = "application/octet-stream"
    language: str = ""
    prompt: str = ""
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    """The text of the audio."""

    text: str
    model: str
    usage: Usage | None = None


@runtime_checkable
class ChatStream(Protocol):
    """An open upstream answer, read in batches of events."""

    def __aiter__(self) -> AsyncIterator[list[ChatEvent]]:
        """Batches of events, one per network read; ends after the batch holding ChatEnd."""
        ...

    async def aclose(self) -> None:
        """Close the upstream response now (safe to call twice)."""
        ...


class ChatProvider(Protocol):
    """One configured upstream (an `ai_model` service): its client, reused by every call.

    Errors are `sidecar.errors` types carrying `metadata={"provider", "upstream_status"}`
    and, for 429, `retry_after` from the upstream's Retry-After.
    """

    provider: str
    """The provider kind: openai, anthropic, huggingface or echo."""

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Send the request and return once the upstream accepted it (status 200).

        Raises:
            SidecarError: The upstream refused or could not be reached; nothing was streamed.
        """
        ...

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """Embed a batch of texts.

        Raises:
            Unimplemented: The provider has no embeddings (UNSUPPORTED_OPERATION).
        """
        ...

    def check_model(self, model: str) -> None:
        """Refuse a model name this provider cannot send safely (before any deployment is
        made for it).

        Raises:
            InvalidArgument: The name would change the URL it is sent to (field `target`).
        """
        ...

    async def ping(self) -> None:
        """Cheap reachability check for health monitoring."""
        ...

    async def close(self) -> None:
        """Release the client and its connections."""
        ...


@runtime_checkable
class MediaProvider(Protocol):
    """A provider that also generates images and transcribes audio (OpenAI and compatible
    APIs). Providers without these APIs simply do not implement it: the router answers
    FAILED_PRECONDITION (UNSUPPORTED_OPERATION) for them."""

    provider: str

    async def generate_image(
        self, request: ImageRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ImageResult:
        """Generate images with the upstream's image API."""
        ...

    async def transcribe(
        self, request: TranscriptionRequest, model: str, timeouts: UpstreamTimeouts
    ) -> TranscriptionResult:
        """Transcribe one audio file with the upstream's transcription API."""
        ...
