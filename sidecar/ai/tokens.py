"""Token estimates for budgets, before the upstream has counted anything.

A tokens-per-minute budget must be charged *before* the call, or concurrent calls overrun
it. The charge is the prompt estimate plus `max_tokens` (the most the answer can cost);
once the upstream reports real usage the difference is refunded (or charged) with
`TokenBucket.adjust`. The estimate is deliberately simple and a little generous: about four
characters per token (OpenAI's rule of thumb for English), plus a few tokens of framing per
message and a flat cost per image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from sidecar.backends.ai.base import ChatRequest, ImagePart

__all__ = ["estimate_embedding_tokens", "estimate_prompt_tokens", "reservation"]

_CHARS_PER_TOKEN: Final = 4
_PER_MESSAGE: Final = 4
_PER_IMAGE: Final = 85
_UNBOUNDED_ANSWER: Final = 256  # charged when a request sets no max_tokens at all


def _text_tokens(text: str) -> int:
    return -(-len(text) // _CHARS_PER_TOKEN)  # ceiling division


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """Tokens the prompt will likely cost: messages, tool calls and tool schemas."""
    total = 3
    for message in request.messages:
        total += _PER_MESSAGE
        for part in message.content:
            total += _PER_IMAGE if isinstance(part, ImagePart) else _text_tokens(part)
        for call in message.tool_calls:
            total += _text_tokens(call.name) + _text_tokens(call.arguments)
    for tool in request.tools:
        schema = json.dumps(tool.parameters) if tool.parameters else ""
        total += _text_tokens(tool.name) + _text_tokens(tool.description) + _text_tokens(schema)
    return total


def reservation(request: ChatRequest) -> int:
    """What a chat call reserves from a tokens-per-minute budget before it starts."""
    answer = request.max_tokens if request.max_tokens is not None else _UNBOUNDED_ANSWER
    return estimate_prompt_tokens(request) + answer


def estimate_embedding_tokens(inputs: Sequence[str]) -> int:
    """Tokens a batch of embedding inputs will likely cost."""
    return sum(_text_tokens(text) for text in inputs) or 1
