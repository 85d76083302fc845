"""Every size an AIService caller controls, bounded in one place.

A request over any of these is refused with INVALID_ARGUMENT naming the field, before any
work is done, so no request can hold the event loop (the README's AI section lists them).
Where an upstream API has a documented limit (OpenAI: 128 tools, 16 metadata pairs of
64/512 characters, 2048 embedding inputs) the bound is at least that; the rest are far
above real use and exist so that the work per request is bounded.
"""

from __future__ import annotations

from typing import Final

from sidecar.config.services.ai import MAX_MODEL_NAME

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_AUDIO_MESSAGES",
    "MAX_EMBED_DIMENSIONS",
    "MAX_EMBED_INPUTS",
    "MAX_EMBED_VALUES",
    "MAX_IMAGES",
    "MAX_IMAGE_OPTION",
    "MAX_IMAGE_PROMPT",
    "MAX_JSON_DEPTH",
    "MAX_MAX_TOKENS",
    "MAX_MESSAGES",
    "MAX_METADATA",
    "MAX_METADATA_KEY",
    "MAX_METADATA_VALUE",
    "MAX_MODEL_NAME",
    "MAX_NAME",
    "MAX_PARTS",
    "MAX_STOP",
    "MAX_STOP_LENGTH",
    "MAX_TARGET",
    "MAX_TEXT",
    "MAX_TOOLS",
    "MAX_TOOL_CALLS",
]

MAX_TARGET: Final = 512
"""Characters in `target` (a service name, `/`, and a model name of MAX_MODEL_NAME)."""
MAX_MESSAGES: Final = 10_000
"""Messages in a chat request."""
MAX_PARTS: Final = 1_000
"""Content parts in one message."""
MAX_TOOL_CALLS: Final = 128
"""Tool calls in one assistant message."""
MAX_TOOLS: Final = 128
"""Tools in a chat request (OpenAI's limit)."""
MAX_STOP: Final = 16
"""Stop sequences in a chat request."""
MAX_STOP_LENGTH: Final = 1_024
"""Characters in one stop sequence."""
MAX_METADATA: Final = 16
"""Metadata pairs in a chat request (OpenAI's limit, as its key and value lengths)."""
MAX_METADATA_KEY: Final = 64
MAX_METADATA_VALUE: Final = 512
MAX_NAME: Final = 256
"""Characters in a name or id: message and tool names, tool call ids, `user`, the schema
name and the forced function name."""
MAX_TEXT: Final = 8 * 1024 * 1024
"""Characters of text in one request, all fields together (contents, image URLs, tool
descriptions and arguments, embedding inputs): far above any model's context window."""
MAX_JSON_DEPTH: Final = 32
"""Nesting levels of a JSON schema (tool parameters, response_format.json_schema)."""
MAX_MAX_TOKENS: Final = 1_000_000
"""`max_tokens` at most."""
MAX_EMBED_INPUTS: Final = 2_048
"""Inputs in one Embed call (OpenAI's limit)."""
MAX_EMBED_DIMENSIONS: Final = 8_192
"""`dimensions` at most (twice the largest embedding models' size)."""
MAX_EMBED_VALUES: Final = 512 * 1024
"""Inputs times `dimensions` at most, when dimensions is set: the answer's 2 MiB of floats
then fits the default 4 MiB max_send_message_size."""
MAX_IMAGE_PROMPT: Final = 32_000
"""Characters in a GenerateImage prompt (OpenAI's limit for gpt-image models)."""
MAX_IMAGES: Final = 10
"""Images in one GenerateImage call (OpenAI's limit)."""
MAX_IMAGE_OPTION: Final = 32
"""Characters in GenerateImage's size, quality and style."""
MAX_AUDIO_BYTES: Final = 25 * 1024 * 1024
"""Audio bytes in one Transcribe call (OpenAI's 25 MiB file limit); held in memory until the
upload, so the bound is also the call's memory."""
MAX_AUDIO_MESSAGES: Final = 16_384
"""Messages in one Transcribe stream (25 MiB in 1.6 kB pieces): bounds the per-message work
of a client sending tiny pieces."""
