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

Budgets are chat's: an alias's own and per-caller budgets (`budgets.AliasBudgets.charged`)
are taken before any deployment, each deployment's at its admission, and all are settled
with the upstream's usage (or, when it reports none, what the call weighs). An attempt the
upstream refused (an error status) or that never reached it costs nothing; one that timed
out keeps its reservation. Embedding inputs
and image prompts weigh their tokens as the deployment's tokenizer counts them (OpenAI's
models, `tokenizer.PromptCounter.count_texts`), else the 4-characters estimate; audio about
one token per 4 kB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Final, Protocol, TypeAlias, TypeVar

from sidecar.ai.budgets import AliasCharge
from sidecar.ai.deployment import Admission, Deployment
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

_AUDIO_BYTES_PER_TOKEN: Final = 4_000
"""Admission weight of audio: about 4 kB per token (whisper bills ~1 token per 0.1 s; a
128 kbit/s mp3 is 16 kB/s), so a 25 MiB file weighs ~6,500 tokens against the budget."""
_NOTHING: Final = Usage(0, 0)
"""What an attempt that never reached its upstream cost."""


class _Answer(Protocol):
    """What an admission is settled with: the upstream's usage and model."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def model(self) -> str: ...


_A = TypeVar("_A", bound=_Answer)
_Weigh: TypeAlias = Callable[[Deployment], Awaitable[int]]
"""What a call weighs (its tokens) on a deployment, for its admission."""


async def embed(
    route: Route,
    inputs: list[str],
    dimensions: int | None,
    deadline: Deadline | None,
    call: RoutedCall,
) -> EmbedResult:
    """Embed `inputs` on the first deployment of the route that can.

    Raises:
        SidecarError: No deployment could answer; an alias's budget cannot admit the call
            in time (RESOURCE_EXHAUSTED).
    """

    async def attempt(deployment: Deployment) -> EmbedResult:
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await deployment.provider.embed(
                inputs, deployment.model, dimensions, deployment.service.timeouts
            )

    return await _unary(route, _texts_weight(inputs), deadline, call, "embeddings", attempt)


async def generate_image(
    route: Route, request: ImageRequest, deadline: Deadline | None, call: RoutedCall
) -> ImageResult:
    """Generate images on the first deployment of the route that can.

    Raises:
        SidecarError: No deployment could answer; FailedPrecondition (UNSUPPORTED_OPERATION)
            when a deployment's provider has no image API; an alias's budget cannot admit
            the call in time (RESOURCE_EXHAUSTED).
    """

    async def attempt(deployment: Deployment) -> ImageResult:
        media = _media(deployment, "image generation")
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await media.generate_image(
                request, deployment.model, deployment.service.timeouts
            )

    _require_media(route, "image generation")
    weight = _texts_weight([request.prompt])
    return await _unary(route, weight, deadline, call, "image_generation", attempt)


async def transcribe(
    route: Route,
    request: TranscriptionRequest,
    rest: Callable[[], Awaitable[bytes]],
    deadline: Deadline | None,
    call: RoutedCall,
) -> TranscriptionResult:
    """Transcribe audio on the first deployment of the route that can.

    `request.audio` is the audio received so far (the first message's piece); `rest()`
    receives the whole of it, and is called once the call holds the alias's budgets and its
    first deployment's admission (breaker, bulkhead, budgets): a refused call is refused
    before its upload is read, and the bulkhead bounds how many uploads are held at once.
    That first admission reserves the tokens of the audio received so far; the rest is
    charged when the call is settled (with the upstream's usage, else the audio's estimate),
    and any later deployment is admitted with the whole audio's weight.

    Raises:
        SidecarError: As `generate_image`; and whatever `rest` raises (the upload's bounds).
    """
    audio = request

    async def receive() -> None:
        nonlocal audio
        if audio is request:
            audio = replace(request, audio=await rest())

    async def weigh(_: Deployment) -> int:
        return 1 + len(audio.audio) // _AUDIO_BYTES_PER_TOKEN

    async def attempt(deployment: Deployment) -> TranscriptionResult:
        media = _media(deployment, "audio transcription")
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            return await media.transcribe(audio, deployment.model, deployment.service.timeouts)

    _require_media(route, "audio transcription")
    return await _unary(route, weigh, deadline, call, "transcription", attempt, receive)


def _texts_weight(texts: Sequence[str]) -> _Weigh:
    """What `texts` (embedding inputs, an image prompt) weigh on a deployment: counted by its
    model's tokenizer where it has one (OpenAI's models with a token budget, see
    `tokenizer`), else estimated; counted once per encoding in a call."""
    counted: dict[str | None, int] = {}

    async def weigh(deployment: Deployment) -> int:
        counter = deployment.prompts
        encoding = counter.encoding if counter is not None else None
        weight = counted.get(encoding)
        if weight is None:
            if counter is None:
                weight = estimate_embedding_tokens(texts)
            else:
                weight = await counter.count_texts(texts)
            counted[encoding] = weight
        return weight

    return weigh


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
    weigh: _Weigh,
    deadline: Deadline | None,
    call: RoutedCall,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[_A]],
    ready: Callable[[], Awaitable[None]] | None = None,
) -> _A:
    """Run the call over the route's deployments, within the alias's budgets when it has
    some (weighed as its first deployment weighs the call), settled when it ends."""
    if route.limits is None:
        return await _attempts(route, weigh, deadline, call, operation, attempt, ready, None)
    weight = await weigh(route.deployments[0])
    async with route.limits.charged(weight, deadline) as charge:
        return await _attempts(route, weigh, deadline, call, operation, attempt, ready, charge)


async def _attempts(
    route: Route,
    weigh: _Weigh,
    deadline: Deadline | None,
    call: RoutedCall,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[_A]],
    ready: Callable[[], Awaitable[None]] | None,
    charge: AliasCharge | None,
) -> _A:
    """Deployments in order, fallback and retry rounds; `ready()` runs once an attempt is
    admitted, before it starts (Transcribe receives its upload there)."""
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
                    await weigh(deployment),
                    deadline,
                    wait=index == last,
                    operation=operation,
                    panic=panic,
                    charge=charge,
                )
            except SidecarError as exc:
                errors.append(exc)
                if exc.reason == "CIRCUIT_OPEN":
                    refused.append(deployment)
                continue
            with admission:  # whatever happens, the attempt is settled once
                result = await _answer(deployment, admission, weigh, operation, attempt, ready)
            if isinstance(result, SidecarError):
                errors.append(result)
                continue
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


async def _answer(
    deployment: Deployment,
    admission: Admission,
    weigh: _Weigh,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[_A]],
    ready: Callable[[], Awaitable[None]] | None,
) -> _A | SidecarError:
    """The admitted attempt's answer, or the error that moves the call on; settled either
    way.

    Raises:
        BaseException: What ends the call (not a fallback error, a cancellation, what
            `ready` raised).
    """
    if ready is not None:
        try:
            await ready()
        except BaseException as exc:  # the caller's input: no upstream was asked
            admission.failed(exc, _NOTHING)
            raise
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
            raise upstream_timeout(deployment.provider_name, "no answer in time") from exc
    except SidecarError as exc:
        admission.failed(exc, _failure_cost(exc))
        exc.metadata.setdefault("deployment", deployment.name)
        if not falls_back(exc):
            raise
        return exc
    except BaseException as exc:
        admission.failed(exc)
        raise
    usage = result.usage
    if usage is None:  # an upstream reporting none is charged what the call weighs
        usage = Usage(await weigh(deployment), 0)
    admission.succeeded(usage, result.model)
    return result


def _failure_cost(error: SidecarError) -> Usage | None:
    """What a failed attempt cost: nothing when the upstream was not reached or refused it
    (an error status; OpenAI bills none), else (a timeout, a malformed answer) its
    reservation, since the upstream may have done the work."""
    status = error.metadata.get("upstream_status", "")
    refused = status == "unreachable" or (status.isdigit() and not status.startswith("2"))
    return _NOTHING if refused else None
