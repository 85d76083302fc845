"""The `echo` provider: the embedded default, so AIService works on a bare machine.

It is not a model. It streams the last user message back word by word, honours
`max_tokens` (one word is one token; cut short it finishes with LENGTH), counts tokens as
words, and returns deterministic embeddings (a SHAKE-256 of the text as long as the
requested dimensions and normalised), so the same text always gets the same vector.

It runs on the event loop, so its work is linear in what it is asked for (the servicer
bounds that) and a long answer gives the loop a turn every `_WORDS_PER_TURN` words.

Usage:

    provider = EchoProvider()
    stream = await provider.open_stream(request, "echo", UpstreamTimeouts())
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
from collections.abc import AsyncIterator, Sequence

from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatRequest,
    ChatStream,
    EmbedResult,
    FinishReason,
    Role,
    UpstreamTimeouts,
    Usage,
)

__all__ = ["DEFAULT_DIMENSIONS", "EchoProvider"]

DEFAULT_DIMENSIONS = 16
_WORDS = re.compile(r"\S+\s*")
_WORDS_PER_TURN = 256
"""Words yielded between two turns of the loop (a word never waits for I/O here)."""


def _tokens(text: str) -> int:
    return len(text.split())


class _EchoStream:
    """Yields one word per batch, as a real stream would."""

    def __init__(self, words: list[str], end: ChatEnd) -> None:
        self._words = words
        self._end = end

    def __aiter__(self) -> AsyncIterator[list[ChatEvent]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[ChatEvent]]:
        for count, word in enumerate(self._words, 1):
            yield [word]
            if count % _WORDS_PER_TURN == 0:
                await asyncio.sleep(0)
        yield [self._end]

    async def aclose(self) -> None:
        return None


class EchoProvider:
    """Answers with the caller's own last user message."""

    provider = "echo"
    local = True
    """Answers are made here, instantly: callers get them chunk by chunk, never merged."""

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Echo the last user message, word by word."""
        text = next((m.text for m in reversed(request.messages) if m.role is Role.USER), "")
        # Only the words that will be sent are cut out (one more tells that some are left).
        limit = request.max_tokens + 1 if request.max_tokens is not None else None
        words = [m.group() for m in itertools.islice(_WORDS.finditer(text.strip()), limit)]
        finish = FinishReason.STOP
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], FinishReason.LENGTH
            words[-1:] = [word.rstrip() for word in words[-1:]]
        prompt = sum(_tokens(m.text) for m in request.messages)
        end = ChatEnd(finish, Usage(prompt, len(words)), model or "echo", "echo-1")
        return _EchoStream(words, end)

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """A unit vector per text, derived from its SHAKE-256 and nothing else."""
        size = dimensions or DEFAULT_DIMENSIONS
        vectors = [_vector(text, size) for text in inputs]
        return EmbedResult(vectors, model or "echo", Usage(sum(_tokens(t) for t in inputs), 0))

    def check_model(self, model: str) -> None:
        """Any name will do: it travels only inside the JSON body."""

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """Nothing to release."""


def _vector(text: str, size: int) -> list[float]:
    # SHAKE-256 stretches one hash to any length in one linear pass.
    digest = hashlib.shake_256(text.encode()).digest(size)
    raw = [byte / 127.5 - 1.0 for byte in digest]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]
