"""AI model providers: domain types and the `ChatProvider` interface in `base`, one module
per provider (`openai`, `anthropic`, `huggingface`, `echo`), each provider's event format
(`openai_wire`, `anthropic_wire`), the AI wording of HTTP errors in `errors`, and the
requests the HTTP providers share in `_http`. The HTTP plumbing under them (the
pooled client, SSE parsing, the status mapping) is the http connection's:
`sidecar.connections.http`.

Provider modules import the HTTP stack at module level and are themselves imported only by
the backend registry when a service configures them, so this package's `__init__` exports
the domain types only.
"""

from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatMessage,
    ChatProvider,
    ChatRequest,
    ChatStream,
    EmbedResult,
    FinishReason,
    ImagePart,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UpstreamTimeouts,
    Usage,
)

__all__ = [
    "ChatEnd",
    "ChatEvent",
    "ChatMessage",
    "ChatProvider",
    "ChatRequest",
    "ChatStream",
    "EmbedResult",
    "FinishReason",
    "ImagePart",
    "ResponseFormat",
    "Role",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "UpstreamTimeouts",
    "Usage",
]
