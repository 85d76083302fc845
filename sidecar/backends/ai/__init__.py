"""AI model providers: domain types and the `ChatProvider` interface in `base`, one module
per provider (`openai`, `anthropic`, `huggingface`, `echo`), the cheap SSE parsing in `sse`
and `sse_stream`, and the status mapping shared by all in `errors`.

Provider modules import their SDK at module level and are themselves imported only by the
backend registry when a service configures them (`import openai` alone takes ~1 s), so this
package's `__init__` exports the domain types only.
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
