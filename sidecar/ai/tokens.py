"""Token estimates for budgets, before the upstream has counted anything.

A tokens-per-minute budget must be charged *before* the call, or concurrent calls overrun
it. The charge is the prompt estimate plus `max_tokens` (the most the answer can cost);
once the upstream reports real usage the difference is refunded (or charged) with
`TokenBucket.adjust`. The estimate is deliberately simple and a little generous: about four
characters per token (OpenAI's rule of thumb for English), plus a few tokens of framing per
message and a flat cost per image.

A streamed answer is settled with the upstream's own usage when it sends one (OpenAI-compatible
APIs are asked for it with `stream_options.include_usage`; Anthropic and TGI send it
unasked). When it sends none (the caller cancelled, the deadline passed, the upstream cut the
stream, or a server ignores the option) the attempt is settled with a count of what it
streamed (`StreamTally`): the prompt estimate below, plus each streamed piece of text or tool
call at one token per four characters and at least one token (servers stream about one token
per chunk).

For OpenAI models the prompt's text is counted exactly instead (`tokenizer.PromptCounter`
passes its encoder as `text_tokens`); the framing, image and tool costs stay as here. So are
the inputs of OpenAI's embedding models (`PromptCounter.count_texts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final

from sidecar.backends.ai.base import ChatEvent, ChatRequest, ImagePart, ToolCallDelta, Usage

__all__ = [
    "StreamTally",
    "estimate_embedding_tokens",
    "estimate_prompt_tokens",
    "prompt_text_chars",
    "reservation",
]

_CHARS_PER_TOKEN: Final = 4
_PER_MESSAGE: Final = 4
_PER_IMAGE: Final = 85
_UNBOUNDED_ANSWER: Final = 256  # charged when a request sets no max_tokens at all


def _text_tokens(text: str) -> int:
    return -(-len(text) // _CHARS_PER_TOKEN)  # ceiling division


def _prompt_texts(request: ChatRequest) -> list[str]:
    """Every piece of text the prompt sends: message parts, tool calls, tool schemas."""
    texts: list[str] = []
    for message in request.messages:
        texts.extend(part for part in message.content if isinstance(part, str))
        for call in message.tool_calls:
            texts += (call.name, call.arguments)
    for tool in request.tools:
        schema = json.dumps(tool.parameters) if tool.parameters else ""
        texts += (tool.name, tool.description, schema)
    return texts


def prompt_text_chars(request: ChatRequest) -> int:
    """Characters of text in the prompt (what encoding it costs)."""
    return sum(len(text) for text in _prompt_texts(request))


def estimate_prompt_tokens(
    request: ChatRequest, text_tokens: Callable[[str], int] = _text_tokens
) -> int:
    """Tokens the prompt will likely cost: its text (four characters a token unless
    `text_tokens` counts better), plus framing per message and a flat cost per image."""
    images = sum(
        isinstance(part, ImagePart) for message in request.messages for part in message.content
    )
    framing = 3 + _PER_MESSAGE * len(request.messages) + _PER_IMAGE * images
    return framing + sum(text_tokens(text) for text in _prompt_texts(request) if text)


def reservation(request: ChatRequest, prompt_tokens: int | None = None) -> int:
    """What a chat call reserves from a tokens-per-minute budget before it starts: the
    prompt (`prompt_tokens` when counted exactly, else estimated) plus `max_tokens`."""
    answer = request.max_tokens if request.max_tokens is not None else _UNBOUNDED_ANSWER
    if prompt_tokens is None:
        prompt_tokens = estimate_prompt_tokens(request)
    return prompt_tokens + answer


def estimate_embedding_tokens(
    inputs: Sequence[str], text_tokens: Callable[[str], int] = _text_tokens
) -> int:
    """Tokens a batch of embedding inputs (or an image prompt) will likely cost: their text
    (four characters a token unless `text_tokens` counts better), with no framing, as
    OpenAI's embeddings count them; at least 1."""
    return sum(text_tokens(text) for text in inputs) or 1


class StreamTally:
    """What one streamed attempt has cost so far, for settling it however it ends.

    `opened` is set once the upstream accepted the request (answered 2xx): from then on the
    prompt counts as spent. An attempt the upstream refused or never answered cost nothing.
    """

    __slots__ = ("opened", "output", "prompt")

    def __init__(self, request: ChatRequest) -> None:
        self.prompt = estimate_prompt_tokens(request)
        self.opened = False
        self.output = 0

    def count(self, batch: Sequence[ChatEvent]) -> None:
        """Add the tokens of a batch read from the upstream (sent to the caller or not)."""
        output = self.output
        for event in batch:
            if isinstance(event, str):
                output += _text_tokens(event) or 1
            elif isinstance(event, ToolCallDelta):
                output += (_text_tokens(event.name) + _text_tokens(event.arguments)) or 1
        self.output = output

    def usage(self, reported: Usage | None = None) -> Usage:
        """The upstream's `reported` usage when there is one, else the count."""
        if reported is not None:
            return reported
        return Usage(self.prompt if self.opened else 0, self.output)
