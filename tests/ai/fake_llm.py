"""A fake LLM upstream speaking three real wire formats over real HTTP and SSE:

- OpenAI `/v1/chat/completions` (exact `chat.completion.chunk` events, the final usage chunk
  when `stream_options.include_usage` is set, then `data: [DONE]`), `/v1/embeddings`,
  `/v1/models` (the ids in `models`), `/v1/images/generations` (JSON, checked as the API
  checks it) and `/v1/audio/transcriptions` (multipart/form-data, parsed with the stdlib's
  MIME parser and recorded in `uploads`);
- Anthropic `/v1/messages` streaming events (`message_start` ... `message_stop`), accepting
  `x-api-key` and `Authorization: Bearer` alike, since the SDK sends either;
- Hugging Face TGI text-generation streams and feature extraction under `/hf/`.

Each completion, image or transcription request takes the next scripted `Step` (429 +
Retry-After, 500; for completions also slow chunks, a cut connection, a hang, a stall
mid-stream), or `default` when the script is empty. Each exchange records the answer
tokens it sent (`Exchange.tokens_sent`, one per word, as the usage the fake reports counts
them), and `open_requests` counts completion requests whose connection is still open.

Run it alone for the benchmark: `PYTHONPATH=tests python -m ai.fake_llm 127.0.0.1:PORT WORDS`.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import hashlib
import json
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ai.fake_http import Exchange, FakeHTTPServer, Request, Responder

__all__ = ["FakeLLM", "Step", "fake_image"]

DEFAULT_WORDS = ("Hello", "from", "the", "fake", "model.")
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_COMPLETION_PATHS = ("/v1/chat/completions", "/v1/messages", "/hf/")
_MEDIA_PATHS = ("/v1/images/generations", "/v1/audio/transcriptions")
_IMAGE_FIELDS = {"model", "prompt", "n", "size", "quality", "style", "response_format", "user"}
_FIRST_WORD_EVENT = {"": 1, "anthropic": 3, "tgi": 0}
"""Events before the first word: OpenAI's role chunk; Anthropic's message_start,
content_block_start and ping."""


@dataclass(frozen=True)
class Step:
    """How to answer one completion request.

    Attributes:
        status: HTTP status; anything but 200 answers with the provider's error body.
        retry_after: seconds for a Retry-After header.
        cut_after: chunks to send before dropping the connection.
        delay: seconds to wait before each chunk (a slow stream).
        hang: send the head, then nothing until the client gives up.
        stall_after: chunks to send, then nothing more until the client gives up.
        first_delay: seconds to wait before the first chunk only.
    """

    status: int = 200
    retry_after: float | None = None
    cut_after: int | None = None
    delay: float = 0.0
    hang: bool = False
    stall_after: int | None = None
    first_delay: float = 0.0


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _prompt_tokens(messages: Sequence[Any]) -> int:
    words = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(len(str(part.get("text", "")).split()) for part in content)
    return words + 3 * len(messages)


class FakeLLM:
    """The fake upstream. Set `words`, `tool_call` or `script` before a call."""

    def __init__(self, words: Sequence[str] = DEFAULT_WORDS, *, api_key: str | None = None) -> None:
        self.words = list(words)
        self.api_key = api_key
        self.tool_call: tuple[str, str] | None = None  # (name, JSON arguments)
        self.script: deque[Step] = deque()
        self.models = ["fake-model"]
        self.uploads: list[dict[str, Any]] = []
        """Each transcription's form: its fields, and `file` as (filename, type, bytes)."""
        self.default = Step()
        self.http = FakeHTTPServer(self._handle)
        self._cache: dict[tuple[Any, ...], list[tuple[bytes, int]]] = {}

    async def start(self, port: int = 0) -> FakeLLM:
        await self.http.start(port=port)
        return self

    async def close(self) -> None:
        await self.http.close()

    @property
    def url(self) -> str:
        return self.http.url

    def then(self, *steps: Step) -> FakeLLM:
        self.script.extend(steps)
        return self

    async def requests_seen(self, count: int) -> None:
        """Wait until `count` completion requests have arrived."""
        while len(self.completions) < count:
            self.http.arrived.clear()
            await self.http.arrived.wait()

    @property
    def completions(self) -> list[Exchange]:
        return [e for e in self.http.exchanges if e.request.path.startswith(_COMPLETION_PATHS)]

    @property
    def media(self) -> list[Exchange]:
        """Image and transcription requests, in arrival order."""
        return [e for e in self.http.exchanges if e.request.path.startswith(_MEDIA_PATHS)]

    def _pieces(self) -> list[str]:
        last = len(self.words) - 1
        return [word if i == last else word + " " for i, word in enumerate(self.words)]

    def _authorised(self, request: Request) -> bool:
        """OpenAI and TGI send `Authorization: Bearer`; Anthropic `x-api-key` (or Bearer)."""
        if self.api_key is None:
            return True
        bearer = request.headers.get("authorization") == f"Bearer {self.api_key}"
        return bearer or request.headers.get("x-api-key") == self.api_key

    async def _handle(self, request: Request, respond: Responder) -> None:
        path = request.path.split("?", 1)[0]
        if not self._authorised(request):
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            await respond.send_json(401, {"type": "error", "error": error})
            return
        if path in _MEDIA_PATHS:
            step = self.script.popleft() if self.script else self.default
            if step.status != 200:
                await self._error("", step, respond)
            elif path == "/v1/images/generations":
                await self._images(request.json(), respond)
            else:
                await self._transcription(request, respond)
            return
        body = request.json() if request.method == "POST" else None
        if path.startswith("/hf/") and not (body or {}).get("stream"):
            await self._embeddings(request, respond)
            return
        if path == "/v1/models":
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                for name in self.models
            ]
            await respond.send_json(200, {"object": "list", "data": models})
            return
        if path == "/v1/embeddings":
            await self._embeddings(request, respond)
            return
        step = self.script.popleft() if self.script else self.default
        kind = "anthropic" if path == "/v1/messages" else "tgi" if path.startswith("/hf/") else ""
        if step.status != 200:
            await self._error(kind, step, respond)
            return
        await respond.send_head(200, _SSE)
        events = self._events(kind, body)
        if step.hang:
            await asyncio.Event().wait()
        if step.first_delay:
            await asyncio.sleep(step.first_delay)
        for i, (event, tokens) in enumerate(events):
            if step.cut_after is not None and i >= step.cut_after:
                respond.cut()
                return
            if step.stall_after is not None and i >= step.stall_after:
                await asyncio.Event().wait()
            if step.delay:
                await asyncio.sleep(step.delay)
            await respond.send_chunk(event)
            respond.exchange.tokens_sent += tokens
        await respond.finish()

    async def _error(self, kind: str, step: Step, respond: Responder) -> None:
        headers = {} if step.retry_after is None else {"retry-after": f"{step.retry_after:g}"}
        message = f"fake upstream answered {step.status}"
        if kind == "anthropic":
            body: Any = {"type": "error", "error": {"type": "api_error", "message": message}}
        elif kind == "tgi":
            body = {"error": message, "error_type": "fake"}
        else:
            body = {"error": {"message": message, "type": "fake_error", "code": None}}
        await respond.send_json(step.status, body, headers)

    @property
    def open_requests(self) -> int:
        """Completion requests whose answer is neither finished nor closed."""
        return sum(not e.closed.is_set() for e in self.completions)

    def _events(self, kind: str, body: dict[str, Any]) -> list[tuple[bytes, int]]:
        """The reply's events, each with the answer tokens it carries, built once per
        distinct request shape (the bench reuses them)."""
        key = (kind, json.dumps(body, sort_keys=True), tuple(self.words), self.tool_call)
        events = self._cache.get(key)
        if events is None:
            build = {"anthropic": self._anthropic_events, "tgi": self._tgi_events}
            built = build.get(kind, self._openai_events)(body)
            # Each format streams the words as consecutive events after a fixed preamble.
            first = _FIRST_WORD_EVENT[kind]
            words = range(first, first + len(self.words))
            events = [(event, int(i in words)) for i, event in enumerate(built)]
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = events
        return events

    def _openai_events(self, body: dict[str, Any]) -> list[bytes]:
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data: dict[str, Any] = {**base, "choices": [choice]}
            if usage:
                data["usage"] = None
            return b"data: " + _dumps(data) + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in self._pieces()]
        finish = "stop"
        if self.tool_call is not None:
            name, arguments = self.tool_call
            call = {"index": 0, "id": "call_fake", "type": "function"}
            events.append(chunk({"tool_calls": [{**call, "function": {"name": name}}]}))
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                )
            finish = "tool_calls"
        events.append(chunk({}, finish))
        if usage:
            prompt, completion = _prompt_tokens(body["messages"]), len(self.words)
            counts = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            events.append(b"data: " + _dumps({**base, "choices": [], "usage": counts}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def _anthropic_events(self, body: dict[str, Any]) -> list[bytes]:
        def event(name: str, data: dict[str, Any]) -> bytes:
            return (
                b"event: " + name.encode() + b"\ndata: " + _dumps({"type": name, **data}) + b"\n\n"
            )

        prompt = _prompt_tokens(body["messages"]) + len(str(body.get("system", "")).split())
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": body["model"],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        events = [event("message_start", {"message": message})]
        events.append(
            event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
        )
        events.append(event("ping", {}))
        for piece in self._pieces():
            delta = {"type": "text_delta", "text": piece}
            events.append(event("content_block_delta", {"index": 0, "delta": delta}))
        events.append(event("content_block_stop", {"index": 0}))
        stop = "end_turn"
        if self.tool_call is not None:
            name, arguments = self.tool_call
            block = {"type": "tool_use", "id": "toolu_fake", "name": name, "input": {}}
            events.append(event("content_block_start", {"index": 1, "content_block": block}))
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(event("content_block_delta", {"index": 1, "delta": delta}))
            events.append(event("content_block_stop", {"index": 1}))
            stop = "tool_use"
        finish = {"stop_reason": stop, "stop_sequence": None}
        events.append(
            event("message_delta", {"delta": finish, "usage": {"output_tokens": len(self.words)}})
        )
        events.append(event("message_stop", {}))
        return events

    def _tgi_events(self, body: dict[str, Any]) -> list[bytes]:
        pieces = self._pieces()
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            token = {"id": i + 1, "text": piece, "logprob": -0.5, "special": False}
            details = {"finish_reason": "eos_token", "generated_tokens": len(pieces), "seed": None}
            data = {
                "index": i + 1,
                "token": token,
                "generated_text": "".join(pieces) if last else None,
                "details": details if last else None,
            }
            events.append(b"data:" + _dumps(data) + b"\n\n")
        return events

    async def _embeddings(self, request: Request, respond: Responder) -> None:
        body = request.json()
        inputs = body.get("input", body.get("inputs"))
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        size = int(body.get("dimensions") or 4)
        vectors = [
            [b / 255 for b in hashlib.sha256(text.encode()).digest()[:size]] for text in texts
        ]
        if request.path.startswith("/hf/"):
            await respond.send_json(200, vectors)
            return
        data = [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ]
        tokens = sum(len(text.split()) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        await respond.send_json(
            200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    async def _images(self, body: dict[str, Any], respond: Responder) -> None:
        """Images whose bytes are a hash of the prompt and index, so a test can check them."""
        unknown = set(body) - _IMAGE_FIELDS
        if unknown or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            await self._invalid(respond, f"bad image request: {sorted(unknown) or 'prompt'}")
            return
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            await self._invalid(respond, "n must be between 1 and 10")
            return
        as_url = body.get("response_format") == "url"
        data = []
        for i in range(n):
            image = fake_image(body["prompt"], i)
            item: dict[str, Any] = {"revised_prompt": body["prompt"] + " (revised)"}
            if as_url:
                item["url"] = f"https://images.example/{hashlib.sha256(image).hexdigest()}.png"
            else:
                item["b64_json"] = base64.b64encode(image).decode()
            data.append(item)
        words = len(body["prompt"].split())
        usage = {
            "input_tokens": words,
            "output_tokens": 100 * n,
            "total_tokens": words + 100 * n,
            "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
        }
        await respond.send_json(200, {"created": 0, "data": data, "usage": usage})

    async def _transcription(self, request: Request, respond: Responder) -> None:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data; boundary="):
            await self._invalid(respond, f"expected multipart/form-data, got {content_type!r}")
            return
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
        )
        form: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            filename = part.get_filename()
            if filename is not None:
                form[str(name)] = (filename, part.get_content_type(), payload)
            else:
                form[str(name)] = payload.decode()
        if "file" not in form or "model" not in form:
            await self._invalid(respond, "file and model are required")
            return
        self.uploads.append(form)
        audio = form["file"][2]
        text = f"heard {len(audio)} bytes {hashlib.sha256(audio).hexdigest()[:12]}"
        usage = {"type": "tokens", "input_tokens": 1 + len(audio) // 1000, "output_tokens": 4}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        await respond.send_json(200, {"text": text, "usage": usage})

    async def _invalid(self, respond: Responder, message: str) -> None:
        error = {"message": message, "type": "invalid_request_error", "code": None}
        await respond.send_json(400, {"error": error})


def fake_image(prompt: str, index: int) -> bytes:
    """The bytes of image `index` of `prompt` (a PNG signature, then a hash)."""
    return b"\x89PNG\r\n\x1a\n" + hashlib.sha256(f"{index}:{prompt}".encode()).digest()


async def _main(address: str, words: int) -> None:
    fake = FakeLLM([f"w{i}" for i in range(words)])
    await fake.start(port=int(address.rsplit(":", 1)[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200))
