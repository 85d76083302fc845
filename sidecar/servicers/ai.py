"""AIService: validates requests, resolves the target to a route, and maps the domain answer
to protos. Fallback, budgets, breakers and the cache live in `sidecar.ai`.

Deadlines: the caller's gRPC deadline bounds the whole call, upstream included. The sidecar
stops a little before it (`_MARGIN`) so that it, not the caller's own timer, answers:
DEADLINE_EXCEEDED with an ErrorInfo naming the deployment, and the upstream response is
closed on the way out. Admission waits and retry sleeps use the same deadline on the
sidecar's clock.

StreamComplete writes with `context.write` instead of being an async generator, so the
whole call runs inside one `asyncio.timeout`. `sidecar.ai.relay` sits between the route and
the writes: chunks that arrive while a write is in flight go out merged in the next message,
and its queue is bounded, so a slow client stops the upstream reads instead of piling up
memory.

Transcribe checks the first message's config and target, and starts the call on the route:
only once its alias's budgets and first deployment admitted it does it read the rest of the
client stream (bounded: `sidecar.ai.limits.MAX_AUDIO_BYTES`; whole, because the upstream
takes one multipart file). A refused call is answered without its upload being read.
ListModels answers from `sidecar.ai.catalog` (configured targets plus the upstreams' lists).

Complete and StreamComplete on an alias with `reattach:` hand a call carrying an
`idempotency-key` header to the alias's `sidecar.ai.reattach.CallRegistry`, scoped by the
caller's identity; the answer streams the same way from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from typing import Final, TypeVar

from opentelemetry.metrics import Meter

from generated.integration.v1 import ai_pb2, ai_pb2_grpc
from sidecar.ai.catalog import ModelCatalog
from sidecar.ai.fallback import RoutedCall, stream_chat
from sidecar.ai.relay import relay
from sidecar.ai.route import Route
from sidecar.ai.router import AIRouter
from sidecar.ai.unary import embed, generate_image, transcribe
from sidecar.backends.ai.base import ChatEvent, ChatRequest
from sidecar.errors import DeadlineExceeded
from sidecar.observability.genai_metrics import GenAIMetrics
from sidecar.resilience import SYSTEM_CLOCK, Clock, Deadline
from sidecar.runtime import Integrations
from sidecar.servicers._common import Context, call_deadline, serve_target
from sidecar.servicers.ai_mapping import (
    Assembler,
    caller_identity,
    chat_request,
    check_target,
    embed_inputs,
    idempotency_key,
    image_request,
    stream_messages,
    transcription_audio,
    transcription_config,
    usage_proto,
)

__all__ = ["AIServicer"]

_MARGIN: Final = 0.05
"""Seconds before the caller's deadline at which the sidecar gives up (at most 10% of it)."""
_KINDS: Final = {
    "alias": ai_pb2.MODEL_KIND_ALIAS,
    "service": ai_pb2.MODEL_KIND_SERVICE,
    "upstream": ai_pb2.MODEL_KIND_UPSTREAM,
}
_T = TypeVar("_T")


class AIServicer(ai_pb2_grpc.AIServiceServicer):
    """Serve AIService over the configured `ai_model` and `ai_alias` services.

    Args:
        integrations: Every configured integration.
        clock: Time for the resilience policies.
        meter: Where GenAI metrics go; None records none.
    """

    def __init__(
        self,
        integrations: Integrations,
        *,
        clock: Clock = SYSTEM_CLOCK,
        meter: Meter | None = None,
    ) -> None:
        self._router = AIRouter(integrations, clock=clock)
        self._clock = clock
        self._metrics = (
            GenAIMetrics(meter, self._router.breaker_states) if meter is not None else None
        )
        if self._metrics is not None:
            # Attempts and refusals reach the GenAI metrics as the deployments' events.
            self._router.observe(self._metrics.listener)
        self._catalog = ModelCatalog(self._router, clock)
        self._model_check: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: built outside a server
            # In the background: an upstream that is slow or down must not delay start-up.
            self._model_check = asyncio.get_running_loop().create_task(
                self._catalog.warn_unlisted(), name="ai-unlisted-models"
            )

    @property
    def router(self) -> AIRouter:
        """The router (for tests and the admin view)."""
        return self._router

    @property
    def model_check(self) -> asyncio.Task[None] | None:
        """The start-up check of the configured models against the upstreams' lists (for
        tests: it sends requests of its own)."""
        return self._model_check

    def _route(self, target: str) -> Route:
        route = self._router.route(check_target(target))
        serve_target(route.name)
        return route

    def _chat(
        self,
        route: Route,
        chat: ChatRequest,
        deadline: Deadline | None,
        call: RoutedCall,
        context: Context,
    ) -> AsyncGenerator[list[ChatEvent], None]:
        """The answer's batches: a re-attachable call when the alias keeps them and the
        caller named one, else a call of its own."""
        calls = self._router.calls(route)
        key = idempotency_key(context) if calls is not None else None
        if calls is None or key is None:
            return stream_chat(route, chat, deadline, call, self._metrics)
        return calls.stream(
            key, caller_identity(context), route, chat, deadline, call, self._metrics
        )

    def _deadline(self, context: Context) -> tuple[Deadline | None, float | None]:
        """The sidecar's deadline on its clock, and the real seconds it has left."""
        deadline = call_deadline(context, self._clock, margin=_MARGIN)
        return deadline, deadline.remaining() if deadline is not None else None

    async def Complete(
        self, request: ai_pb2.CompleteRequest, context: Context
    ) -> ai_pb2.CompleteResponse:
        route = self._route(request.target)
        chat = chat_request(request)
        deadline, seconds = self._deadline(context)
        call = RoutedCall()
        answer = Assembler()
        try:
            async with asyncio.timeout(seconds):
                stream = self._chat(route, chat, deadline, call, context)
                async with contextlib.aclosing(stream):
                    async for batch in stream:
                        answer.add(batch)
        except TimeoutError as exc:
            raise _too_late(call) from exc
        return answer.response(call)

    async def StreamComplete(  # type: ignore[override]  # write-style streaming handler
        self, request: ai_pb2.StreamCompleteRequest, context: Context
    ) -> None:
        route = self._route(request.target)
        chat = chat_request(request)
        deadline, seconds = self._deadline(context)
        call = RoutedCall()
        write = context.write

        async def send(batch: list[ChatEvent]) -> None:
            for message in stream_messages(batch, call):
                await write(message)

        try:
            async with asyncio.timeout(seconds):
                stream = self._chat(route, chat, deadline, call, context)
                await relay(stream, send, coalesce=lambda: call.coalesce)
        except TimeoutError as exc:
            raise _too_late(call) from exc

    async def _unary(
        self, context: Context, run: Callable[[Deadline | None, RoutedCall], Awaitable[_T]]
    ) -> tuple[_T, RoutedCall]:
        """Run a unary AI call within the caller's deadline."""
        deadline, seconds = self._deadline(context)
        call = RoutedCall()
        try:
            async with asyncio.timeout(seconds):
                return await run(deadline, call), call
        except TimeoutError as exc:
            raise _too_late(call) from exc

    async def Embed(self, request: ai_pb2.EmbedRequest, context: Context) -> ai_pb2.EmbedResponse:
        route = self._route(request.target)
        inputs, dimensions = embed_inputs(request)
        result, call = await self._unary(
            context, lambda deadline, call: embed(route, inputs, dimensions, deadline, call)
        )
        return ai_pb2.EmbedResponse(
            embeddings=[
                ai_pb2.Embedding(index=i, values=vector) for i, vector in enumerate(result.vectors)
            ],
            model=result.model,
            deployment=call.deployment,
            usage=usage_proto(result.usage),
        )

    async def GenerateImage(
        self, request: ai_pb2.GenerateImageRequest, context: Context
    ) -> ai_pb2.GenerateImageResponse:
        route = self._route(request.target)
        wanted = image_request(request)
        result, call = await self._unary(
            context, lambda deadline, call: generate_image(route, wanted, deadline, call)
        )
        return ai_pb2.GenerateImageResponse(
            images=[
                ai_pb2.Image(data=image.data, url=image.url, revised_prompt=image.revised_prompt)
                for image in result.images
            ],
            model=result.model,
            deployment=call.deployment,
            usage=usage_proto(result.usage),
        )

    async def Transcribe(
        self, request_iterator: AsyncIterable[ai_pb2.TranscribeRequest], context: Context
    ) -> ai_pb2.TranscribeResponse:
        messages = aiter(request_iterator)
        target, settings = await transcription_config(messages)
        route = self._route(target)  # an unknown target is refused before the audio is read

        def rest() -> Awaitable[bytes]:
            return transcription_audio(settings.audio, messages)

        result, call = await self._unary(
            context, lambda deadline, call: transcribe(route, settings, rest, deadline, call)
        )
        return ai_pb2.TranscribeResponse(
            text=result.text,
            model=result.model,
            deployment=call.deployment,
            usage=usage_proto(result.usage),
        )

    async def ListModels(
        self, request: ai_pb2.ListModelsRequest, context: Context
    ) -> ai_pb2.ListModelsResponse:
        return ai_pb2.ListModelsResponse(
            models=[
                ai_pb2.ModelInfo(
                    target=info.target,
                    kind=_KINDS[info.kind],
                    deployments=info.deployments,
                    provider=info.provider,
                    default=info.default,
                    response_cache=info.response_cache,
                )
                for info in await self._catalog.targets()
            ]
        )


def _too_late(call: RoutedCall) -> DeadlineExceeded:
    metadata = {"deployment": call.deployment} if call.deployment else None
    return DeadlineExceeded(
        "the AI call did not finish before the caller's deadline",
        reason="DEADLINE_EXCEEDED",
        metadata=metadata,
    )
