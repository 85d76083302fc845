"""Embeddings, images and transcriptions over a route: the unary twins of
`fallback.stream_chat`.

Deployments are tried in order with the same admission (each deployment's streaming
pipeline, with no first chunk: the answer comes whole), the same fallback rule (UNAVAILABLE,
RESOURCE_EXHAUSTED, an open circuit or a timeout moves the call on) and the same retry
rounds. With nothing streamed, any failure may fall back; the first deployment to answer
wins.

Images and transcriptions exist only on providers implementing `MediaProvider` (OpenAI and
compatible APIs). A route with none of them answers FAILED_PRECONDITION
(UNSUPPORTED_OPERATION) before any admission; in an alias mixing providers, reaching an
unsupported deployment answers the same, without falling back: the alias is misconfigured
for the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sidecar.ai.deployment import Deployment
from sidecar.ai.fallback import RoutedCall
from sidecar.ai.rounds import Rounds, calm, falls_back, final_error, panics
from sidecar.ai.route import Route
from sidecar.ai.tokens import estimate_embedding_tokens
from sidecar.backends.ai.base import (
    EmbedResult,
    ImageRequest,
    ImageResult,
    MediaProvider,
    TranscriptionRequest,
    TranscriptionResult,
    Usage,
)
from sidecar.backends.ai.errors import upstream_timeout
from sidecar.errors import FailedPrecondition, SidecarError
from sidecar.observability.tracing import client_span
from sidecar.resilience import Deadline

__all__ = ["embed", "generate_image", "transcribe"]

_AUDIO_BYTES_PER_TOKEN = 4_000
"""Admission weight of audio: about 4 kB per token (whisper bills ~1 token per 0.1 s; a
128 kbit/s mp3 is 16 kB/s), so a 25 MiB file weighs ~6,500 tokens against the budget."""


class _Answer(Protocol):
    """What an admission is settled with: the upstream's usage and model."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def model(self) -> str: ...


_A = TypeVar("_A", bound=_Answer)


async def embed(
    route: Route,
    inputs: list[str],
    dimensions: int | None,
    deadline: Deadline | None,
    call: RoutedCall,
) -> EmbedResult:
    """Embed `inputs` on the first deployment of the route that can.

    Raises:
        SidecarError: No deployment could answer.
    """
    weight = estimate_embedding_tokens(inputs)

    async def attempt(deployment: Deployment) -> EmbedResult:
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await deployment.provider.embed(
                inputs, deployment.model, dimensions, deployment.service.timeouts
            )

    return await _unary(route, weight, deadline, call, "embeddings", attempt)


async def generate_image(
    route: Route, request: ImageRequest, deadline: Deadline | None, call: RoutedCall
) -> ImageResult:
    """Generate images on the first deployment of the route that can.

    Raises:
        SidecarError: No deployment could answer; FailedPrecondition (UNSUPPORTED_OPERATION)
            when a deployment's provider has no image API.
    """

    async def attempt(deployment: Deployment) -> ImageResult:
        media = _media(deployment, "image generation")
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await media.generate_image(
                request, deployment.model, deployment.service.timeouts
            )

    _require_media(route, "image generation")
    weight = estimate_embedding_tokens([request.prompt])
    return await _unary(route, weight, deadline, call, "image_generation", attempt)


async def transcribe(
    route: Route, request: TranscriptionRequest, deadline: Deadline | None, call: RoutedCall
) -> TranscriptionResult:
    """Transcribe audio on the first deployment of the route that can.

    Raises:
        SidecarError: As `generate_image`.
    """

    async def attempt(deployment: Deployment) -> TranscriptionResult:
        media = _media(deployment, "audio transcription")
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await media.transcribe(request, deployment.model, deployment.service.timeouts)

    _require_media(route, "audio transcription")
    weight = 1 + len(request.audio) // _AUDIO_BYTES_PER_TOKEN
    return await _unary(route, weight, deadline, call, "transcription", attempt)


def _require_media(route: Route, what: str) -> None:
    """Refuse a route none of whose deployments has the API, before admitting anything."""
    if not any(isinstance(d.provider, MediaProvider) for d in route.deployments):
        raise _unsupported(route.deployments[0], what)


def _media(deployment: Deployment, what: str) -> MediaProvider:
    provider = deployment.provider
    if not isinstance(provider, MediaProvider):
        raise _unsupported(deployment, what)
    return provider


def _unsupported(deployment: Deployment, what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the {deployment.provider_name} provider has no {what}; "
        "name an openai (or OpenAI-compatible) deployment",
        reason="UNSUPPORTED_OPERATION",
        metadata={"provider": deployment.provider_name, "deployment": deployment.name},
    )


async def _unary(
    route: Route,
    weight: int,
    deadline: Deadline | None,
    call: RoutedCall,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[_A]],
) -> _A:
    rounds = Rounds(route, deadline, route.clock)
    errors: list[SidecarError] = []
    targets, panic = route.deployments, False
    while True:
        if not panic:
            errors.clear()
        refused: list[Deployment] = []
        last = len(targets) - 1
        for index, deployment in enumerate(targets):
            try:
                admission = await deployment.admit(
                    weight, deadline, wait=index == last, operation=operation, panic=panic
                )
            except SidecarError as exc:
                errors.append(exc)
                if exc.reason == "CIRCUIT_OPEN":
                    refused.append(deployment)
                continue
            with admission:  # whatever happens, the attempt is settled once
                try:
                    try:
                        with client_span(  # each deployment tried is a span of its own
                            f"{operation} {deployment.model}",
                            {
                                "gen_ai.system": deployment.provider_name,
                                "gen_ai.operation.name": operation,
                                "gen_ai.request.model": deployment.model,
                            },
                        ):
                            result = await attempt(deployment)
                    except TimeoutError as exc:
                        raise upstream_timeout(
                            deployment.provider_name, "no answer in time"
                        ) from exc
                except SidecarError as exc:
                    admission.failed(exc)
                    exc.metadata.setdefault("deployment", deployment.name)
                    if not falls_back(exc):
                        raise
                    errors.append(exc)
                    continue
                except BaseException as exc:
                    admission.failed(exc)
                    raise
                admission.succeeded(result.usage, result.model)
            if not admission.through_open_breaker:
                calm(route)
            call.deployment = deployment.name
            return result
        if not panic and panics(route, refused, errors):
            targets, panic = tuple(refused), True  # last resort: through their open breakers
            continue
        targets, panic = route.deployments, False
        if not await rounds.again(errors):
            raise final_error(errors)
