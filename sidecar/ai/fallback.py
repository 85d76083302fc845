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

An alias with `hedge` (see `hedge`) does not wait out a slow first chunk: the attempt opens
in a task, and when no first batch has come by the hedge delay, the next deployment is
admitted (without waiting) and opened too. The first of the two to deliver a batch answers;
the other is cancelled, its upstream response closed and its reservation settled with
what it cost ("HEDGE_LOST"). Only the winner's batches reach the caller or the cache, so no
answer mixes two deployments. Without a hedge the attempt opens inline (no task).

When every deployment failed, another round starts after the backoff (at least the
shortest Retry-After any of them gave), if the route's retry policy, its retry budget and
the deadline allow; otherwise the last error is the answer.

Whatever ends the call (success, error, the caller cancelling, the caller's deadline), the
upstream response is closed in `finally`, so the upstream stops at once, and the attempt's
reservation on the deployment's token budget is settled with what it cost: the upstream's
usage when it sent one, else a count of what it streamed (`tokens.StreamTally`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from sidecar.ai.budgets import AliasBudgets, AliasCharge
from sidecar.ai.deployment import Admission, Deployment
from sidecar.ai.response_cache import CachedAnswer, Recorder, is_deterministic
from sidecar.ai.rounds import Rounds, calm, falls_back, final_error, panics
from sidecar.ai.route import Route
from sidecar.ai.tokens import StreamTally
from sidecar.backends.ai.base import ChatEnd, ChatEvent, ChatRequest, ChatStream
from sidecar.backends.ai.errors import stream_interrupted, upstream_timeout
from sidecar.errors import SidecarError
from sidecar.observability.genai_metrics import GenAIMetrics
from sidecar.resilience import Clock, Deadline

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
    deployment: Deployment, request: ChatRequest, tally: StreamTally
) -> tuple[ChatStream, AsyncIterator[list[ChatEvent]], list[ChatEvent]]:
    """Open the stream and read its first batch within `first_chunk_timeout`; `tally`
    learns when the upstream accepted the request.

    The stream is closed here if anything goes wrong before it is handed back.
    """
    stream: ChatStream | None = None
    provider = deployment.provider_name
    try:
        async with asyncio.timeout(deployment.service.first_chunk_timeout):
            stream = await deployment.provider.open_stream(
                request, deployment.model, deployment.service.timeouts
            )
            tally.opened = True
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


class _Try:
    """One admitted attempt: its deployment, admission and cost, and once it has answered,
    its open stream and first batch."""

    __slots__ = (
        "admission",
        "deployment",
        "first",
        "iterator",
        "request",
        "started",
        "stream",
        "tally",
    )

    def __init__(self, deployment: Deployment, request: ChatRequest, admission: Admission) -> None:
        self.deployment = deployment
        self.request = request
        self.admission = admission
        self.tally = StreamTally(request)
        self.stream: ChatStream | None = None
        self.iterator: AsyncIterator[list[ChatEvent]] | None = None
        self.first: list[ChatEvent] = []
        self.started: float | None = None  # when `open` began

    async def open(self, clock: Clock) -> None:
        """Open the stream and read the first batch, timing it for hedging."""
        self.started = started = clock.monotonic()
        self.stream, self.iterator, self.first = await _open(
            self.deployment, self.request, self.tally
        )
        self.deployment.first_chunks.add(clock.monotonic() - started)

    async def abandon(self, outcome: str) -> None:
        """Close an attempt that will not answer (the hedge it lost, or the call ended) and
        settle it with what it cost, its unsent first batch included."""
        if self.stream is not None:
            self.tally.count(self.first)
            await self.stream.aclose()
        self.admission.release(self.tally.usage(), outcome)


class _ChatCall:
    """The bookkeeping of one streamed call: admission, hedging, settling, cache, errors."""

    def __init__(
        self,
        route: Route,
        keyed: ChatRequest,
        deadline: Deadline | None,
        charge: AliasCharge | None = None,
    ) -> None:
        self.route = route
        self.keyed = keyed
        self.deadline = deadline
        self.charge = charge  # the alias's budgets: every attempt's cost is spent from it
        cacheable = route.cache is not None and is_deterministic(keyed)
        self.recorder = Recorder() if cacheable else None
        self.errors: list[SidecarError] = []
        self.hedged = False  # at most one extra request per call

    async def admit(
        self, deployment: Deployment, request: ChatRequest, wait: bool, panic: bool
    ) -> _Try | None:
        """An admitted attempt on `deployment`, or None after noting its refusal."""
        try:
            admission = await deployment.admit(
                await deployment.reservation(request),
                self.deadline,
                wait=wait,
                panic=panic,
                charge=self.charge,
            )
        except SidecarError as exc:
            self.errors.append(exc)
            return None
        return _Try(deployment, request, admission)

    async def succeeded(self, attempt: _Try, end: ChatEnd) -> None:
        """Settle the attempt with its usage, store the answer in the cache."""
        attempt.admission.succeeded(attempt.tally.usage(end.usage), end.model)
        cache, recorder = self.route.cache, self.recorder
        if cache is not None and recorder is not None:
            await cache.put(self.keyed, CachedAnswer(recorder.events, attempt.deployment.name))

    def failed(self, attempt: _Try, error: BaseException) -> bool:
        """Settle a failed attempt with what it cost; True when the call may move to the
        next deployment."""
        admission = attempt.admission
        admission.failed(error, attempt.tally.usage())
        if not isinstance(error, SidecarError):
            return False
        error.metadata.setdefault("deployment", attempt.deployment.name)
        if not admission.committed and falls_back(error):
            self.errors.append(error)
            return True
        return False

    def hedge_delay(self, attempt: _Try, spare: Deployment | None) -> float | None:
        """Seconds to wait for `attempt`'s first chunk before hedging to `spare`; None
        when the call does not hedge."""
        hedge = self.route.hedge
        if hedge is None or spare is None or self.hedged:
            return None
        return hedge.delay(attempt.deployment.first_chunks)

    async def hedge(self, spare: Deployment, request: ChatRequest) -> _Try | None:
        """The extra attempt on `spare`, if the retry budget pays for it and `spare`
        admits it at once; a refusal is not the call's error (`spare` is tried in turn)."""
        self.hedged = True
        budget = self.route.budget
        if budget is not None and not budget.try_spend_retry():
            return None
        try:
            weight = await spare.reservation(request)
            admission = await spare.admit(weight, self.deadline, wait=False, charge=self.charge)
        except SidecarError:
            return None
        return _Try(spare, request, admission)

    async def first_batch(
        self, attempt: _Try, spare: Deployment | None, request: ChatRequest
    ) -> tuple[_Try | None, bool]:
        """The attempt whose first batch came first: `attempt`, or (hedged) one on
        `spare`, the other abandoned. None when each failed in a way that moves the call
        on (their errors noted); the flag says whether `spare` was tried.

        Raises:
            BaseException: An error that ends the call, or a cancellation (every attempt
                closed and settled first).
        """
        clock = self.route.clock
        delay = self.hedge_delay(attempt, spare)
        if delay is None:
            try:
                await attempt.open(clock)
            except BaseException as exc:
                if not self.failed(attempt, exc):
                    raise
                return None, False
            return attempt, False
        running = {asyncio.ensure_future(attempt.open(clock)): attempt}
        timer: asyncio.Future[None] | None = asyncio.ensure_future(clock.sleep(delay))
        tried_spare = won = False
        try:
            while running:
                waiting: set[asyncio.Future[None]] = set(running)
                if timer is not None:
                    waiting.add(timer)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if timer is not None and timer in done:
                    timer = None
                    assert spare is not None  # a delay means a spare
                    extra = await self.hedge(spare, spare.prepare(request))
                    if extra is not None:
                        tried_spare = True
                        running[asyncio.ensure_future(extra.open(clock))] = extra
                for task in [task for task in running if task in done]:
                    candidate = running.pop(task)
                    error = task.exception()
                    if error is None:
                        won = True
                        return candidate, tried_spare
                    if not self.failed(candidate, error):
                        raise error
            return None, tried_spare
        finally:
            if timer is not None:
                timer.cancel()
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
            # The answer came from the other attempt, or the call ended: close and settle.
            outcome = "HEDGE_LOST" if won else "CANCELLED"
            for task, loser in running.items():
                if not task.cancelled():
                    task.exception()  # retrieved: how the loser ended no longer matters
                elif won and loser.started is not None:
                    # A lower bound of its time to first chunk: without it, the tails cut
                    # short by hedging would drag the deployment's percentile down.
                    loser.deployment.first_chunks.add(clock.monotonic() - loser.started)
                await loser.abandon(outcome)


def stream_chat(
    route: Route,
    request: ChatRequest,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
) -> AsyncGenerator[list[ChatEvent], None]:
    """Stream the answer to `request` in batches; the last batch ends with a `ChatEnd`.

    An alias with budgets of its own (`route.limits`, see `budgets`) takes the call's share
    of them first and settles it with what the call's attempts cost once it ends.

    Raises:
        SidecarError: No deployment could answer, or the committed stream broke; an
            alias's budget cannot admit the call in time (RESOURCE_EXHAUSTED).
        InvalidArgument: The caller's identity metadata is not a valid one.
    """
    if route.limits is None:
        return _stream_chat(route, request, deadline, call, metrics)
    return _within_budgets(route, route.limits, request, deadline, call, metrics)


async def _within_budgets(
    route: Route,
    limits: AliasBudgets,
    request: ChatRequest,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
) -> AsyncGenerator[list[ChatEvent], None]:
    first = route.deployments[0]
    weight = await first.reservation(first.prepare(request))
    async with limits.charged(weight, deadline) as charge:
        stream = _stream_chat(route, request, deadline, call, metrics, charge)
        async with contextlib.aclosing(stream) as batches:
            async for batch in batches:
                yield batch


async def _stream_chat(
    route: Route,
    request: ChatRequest,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
    charge: AliasCharge | None = None,
) -> AsyncGenerator[list[ChatEvent], None]:
    keyed = route.deployments[0].prepare(request)
    hit = await _cached(route, keyed, call, metrics)
    if hit is not None:
        for event in hit.events:
            yield [event]
        return
    state = _ChatCall(route, keyed, deadline, charge)
    rounds = Rounds(route, deadline, route.clock)
    targets, panic = route.deployments, False
    while True:
        if not panic:
            state.errors.clear()
        refused: list[Deployment] = []
        last = len(targets) - 1
        index = 0
        while index <= last:
            deployment = targets[index]
            index += 1
            prepared = deployment.prepare(request)
            attempt = await state.admit(deployment, prepared, index > last, panic)
            if attempt is None:
                if state.errors[-1].reason == "CIRCUIT_OPEN":
                    refused.append(deployment)
                continue
            spare = targets[index] if index <= last and not panic else None
            winner, tried_spare = await state.first_batch(attempt, spare, request)
            if tried_spare:
                index += 1  # the spare had its attempt
            if winner is None:
                continue
            try:
                async with contextlib.aclosing(_stream(winner, state, call)) as batches:
                    async for batch in batches:
                        yield batch
                return
            except BaseException as exc:
                # Cancelled, the caller's deadline and bugs are never moved to another
                # deployment; neither is anything once the first batch went out.
                if not state.failed(winner, exc):
                    raise
            finally:
                # Settles (ignored) only what nothing else settled.
                winner.admission.release(winner.tally.usage())
        if not panic and panics(route, refused, state.errors):
            targets, panic = tuple(refused), True  # last resort: through their open breakers
            continue
        targets, panic = route.deployments, False
        if not await rounds.again(state.errors):
            raise final_error(state.errors)


async def _stream(
    attempt: _Try, state: _ChatCall, call: RoutedCall
) -> AsyncGenerator[list[ChatEvent], None]:
    """An answering attempt, streamed to the caller from its first batch on and settled
    as a success at its end; `tally` counts every batch read, for settling however the
    attempt ends. The upstream response is closed whatever happens."""
    deployment, admission, tally = attempt.deployment, attempt.admission, attempt.tally
    stream, iterator, batch = attempt.stream, attempt.iterator, attempt.first
    assert stream is not None and iterator is not None  # opened
    try:
        call.deployment = deployment.name
        local = getattr(deployment.provider, "local", False)
        call.coalesce = deployment.service.coalesce and not local
        while True:
            tally.count(batch)
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
        await state.succeeded(attempt, end)
        if not admission.through_open_breaker:
            calm(state.route)
    finally:
        await stream.aclose()
