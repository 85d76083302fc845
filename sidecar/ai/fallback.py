"""Running one call over a route: deployments in order, fallback, retry rounds, cache.

For each round, every deployment of the route is tried in order. A deployment that refuses
(cooling down, breaker open, over budget) or fails with UNAVAILABLE, RESOURCE_EXHAUSTED or
a timeout hands the call to the next one; any other error (the caller's bad input, the
sidecar's own credentials) ends the call at once. Only the last deployment may wait for its
limiters, within the deadline; the others refuse at once so the call moves on.

Each attempt is one admission on the deployment's streaming pipeline (`Admission`), and
fallback sits above the pipelines. Streams commit when their first batch is handed to the
caller (`Admission.first_chunk`): from then on a failure ends the call (UNAVAILABLE,
STREAM_INTERRUPTED) and nothing is retried, so no text is ever sent twice. Before that, a
deployment gets `first_chunk_timeout` to produce its first chunk. Attempts and refusals
reach the GenAI metrics as the pipelines' events, not from here.

When every deployment failed, another round starts after the backoff (at least the
shortest Retry-After any of them gave), if the route's retry policy, its retry budget and
the deadline allow; otherwise the last error is the answer.

Whatever ends the call (success, error, the caller cancelling, the caller's deadline), the
upstream response is closed in `finally`, so the upstream stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from sidecar.ai.deployment import Admission, Deployment
from sidecar.ai.response_cache import CachedAnswer, Recorder, is_deterministic
from sidecar.ai.rounds import Rounds, calm, falls_back, final_error, panics
from sidecar.ai.route import Route
from sidecar.ai.tokens import reservation
from sidecar.backends.ai.base import ChatEnd, ChatEvent, ChatRequest, ChatStream
from sidecar.backends.ai.errors import stream_interrupted, upstream_timeout
from sidecar.errors import SidecarError
from sidecar.observability.genai_metrics import GenAIMetrics
from sidecar.resilience import Deadline

__all__ = ["RoutedCall", "stream_chat"]


@dataclass(slots=True)
class RoutedCall:
    """What the caller learns about the call as it runs.

    Attributes:
        deployment: The deployment answering (`service/model`), once one does.
        cached: The answer comes from the response cache.
        coalesce: Chunks may be merged when the caller falls behind. False for answers
            made locally and instantly (a cache replay, the echo provider), which would
            otherwise arrive as one lump instead of the stream they were.
    """

    deployment: str = ""
    cached: bool = False
    coalesce: bool = True


async def _cached(
    route: Route, keyed: ChatRequest, call: RoutedCall, metrics: GenAIMetrics | None
) -> CachedAnswer | None:
    """The cached answer of a deterministic request, or None (no cache, a miss, or a
    request that is not deterministic)."""
    if route.cache is None or not is_deterministic(keyed):
        return None
    hit = await route.cache.get(keyed)
    if metrics is not None:
        metrics.record_cache(route.name, hit is not None)
    if hit is not None:
        call.cached, call.deployment, call.coalesce = True, hit.deployment, False
    return hit


async def _open(
    deployment: Deployment, request: ChatRequest
) -> tuple[ChatStream, AsyncIterator[list[ChatEvent]], list[ChatEvent]]:
    """Open the stream and read its first batch within `first_chunk_timeout`.

    The stream is closed here if anything goes wrong before it is handed back.
    """
    stream: ChatStream | None = None
    provider = deployment.provider_name
    try:
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            stream = await deployment.provider.open_stream(
                request, deployment.model, deployment.service.timeouts
            )
            iterator = aiter(stream)
            batch = await anext(iterator, None)
    except TimeoutError as exc:
        if stream is not None:
            await stream.aclose()
        raise upstream_timeout(provider, "no first chunk in time") from exc
    except BaseException:
        if stream is not None:
            await stream.aclose()
        raise
    if batch is None:
        await stream.aclose()
        raise stream_interrupted(provider, "the stream ended before its first chunk")
    return stream, iterator, batch


class _ChatCall:
    """The bookkeeping of one streamed call: admission, settling, cache, errors."""

    def __init__(self, route: Route, keyed: ChatRequest, deadline: Deadline | None) -> None:
        self.route = route
        self.keyed = keyed
        self.deadline = deadline
        cacheable = route.cache is not None and is_deterministic(keyed)
        self.recorder = Recorder() if cacheable else None
        self.errors: list[SidecarError] = []

    async def admit(
        self, deployment: Deployment, request: ChatRequest, wait: bool, panic: bool
    ) -> Admission | None:
        """Admission on `deployment`, or None after noting its refusal."""
        try:
            return await deployment.admit(
                reservation(request), self.deadline, wait=wait, panic=panic
            )
        except SidecarError as exc:
            self.errors.append(exc)
            return None

    async def succeeded(self, deployment: Deployment, admission: Admission, end: ChatEnd) -> None:
        """Settle the attempt with the real usage, store the answer in the cache."""
        admission.succeeded(end.usage, end.model)
        cache, recorder = self.route.cache, self.recorder
        if cache is not None and recorder is not None:
            await cache.put(self.keyed, CachedAnswer(recorder.events, deployment.name))

    def failed(self, deployment: Deployment, admission: Admission, error: BaseException) -> bool:
        """Settle a failed attempt; True when the call may move to the next deployment."""
        admission.failed(error)
        if not isinstance(error, SidecarError):
            return False
        error.metadata.setdefault("deployment", deployment.name)
        if not admission.committed and falls_back(error):
            self.errors.append(error)
            return True
        return False


async def stream_chat(
    route: Route,
    request: ChatRequest,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
) -> AsyncGenerator[list[ChatEvent], None]:
    """Stream the answer to `request` in batches; the last batch ends with a `ChatEnd`.

    Raises:
        SidecarError: No deployment could answer, or the committed stream broke.
    """
    keyed = route.deployments[0].prepare(request)
    hit = await _cached(route, keyed, call, metrics)
    if hit is not None:
        for event in hit.events:
            yield [event]
        return
    state = _ChatCall(route, keyed, deadline)
    rounds = Rounds(route, deadline, route.clock)
    targets, panic = route.deployments, False
    while True:
        if not panic:
            state.errors.clear()
        refused: list[Deployment] = []
        last = len(targets) - 1
        for index, deployment in enumerate(targets):
            prepared = deployment.prepare(request)
            admission = await state.admit(deployment, prepared, index == last, panic)
            if admission is None:
                if state.errors[-1].reason == "CIRCUIT_OPEN":
                    refused.append(deployment)
                continue
            try:
                async with contextlib.aclosing(
                    _attempt(deployment, prepared, admission, state, call)
                ) as batches:
                    async for batch in batches:
                        yield batch
                return
            except BaseException as exc:
                # Cancelled, the caller's deadline and bugs are never moved to another
                # deployment; neither is anything once the first batch went out.
                if not state.failed(deployment, admission, exc):
                    raise
            finally:
                admission.release()  # settles (ignored) only what nothing else settled
        if not panic and panics(route, refused, state.errors):
            targets, panic = tuple(refused), True  # last resort: through their open breakers
            continue
        targets, panic = route.deployments, False
        if not await rounds.again(state.errors):
            raise final_error(state.errors)


async def _attempt(
    deployment: Deployment,
    request: ChatRequest,
    admission: Admission,
    state: _ChatCall,
    call: RoutedCall,
) -> AsyncGenerator[list[ChatEvent], None]:
    """One admitted attempt, streamed to the caller and settled as a success at its end; the
    upstream response is closed whatever happens."""
    stream: ChatStream | None = None
    try:
        stream, iterator, batch = await _open(deployment, request)
        call.deployment = deployment.name
        local = getattr(deployment.provider, "local", False)
        call.coalesce = deployment.service.coalesce and not local
        while True:
            if state.recorder is not None:
                state.recorder.add(batch)
            end = batch[-1] if isinstance(batch[-1], ChatEnd) else None
            admission.first_chunk()  # committed: from here on nothing is retried
            yield batch
            if end is not None:
                break
            next_batch = await anext(iterator, None)
            if next_batch is None:
                raise stream_interrupted(deployment.provider_name, "no end event")
            batch = next_batch
        await state.succeeded(deployment, admission, end)
        if not admission.through_open_breaker:
            calm(state.route)
    finally:
        if stream is not None:
            await stream.aclose()
