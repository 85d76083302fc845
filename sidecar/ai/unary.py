"""Embeddings over a route: the unary twin of `fallback.stream_chat`.

Deployments are tried in order with the same admission (breaker, budgets, cooldown), the
same fallback rule (UNAVAILABLE, RESOURCE_EXHAUSTED, an open circuit or a timeout moves the
call on) and the same retry rounds. With nothing streamed, any failure may fall back; the
first deployment to answer wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sidecar.ai.deployment import Deployment
from sidecar.ai.fallback import RoutedCall
from sidecar.ai.rounds import Rounds, falls_back, final_error
from sidecar.ai.route import Route
from sidecar.ai.tokens import estimate_embedding_tokens
from sidecar.backends.ai.base import EmbedResult
from sidecar.backends.ai.errors import upstream_timeout
from sidecar.errors import SidecarError
from sidecar.observability.genai_metrics import GenAIMetrics
from sidecar.resilience import Deadline

__all__ = ["embed"]


async def embed(
    route: Route,
    inputs: list[str],
    dimensions: int | None,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
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

    return await _unary(route, weight, deadline, call, metrics, "embeddings", attempt)


async def _unary(
    route: Route,
    weight: int,
    deadline: Deadline | None,
    call: RoutedCall,
    metrics: GenAIMetrics | None,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[EmbedResult]],
) -> EmbedResult:
    rounds = Rounds(route, deadline, route.clock)
    errors: list[SidecarError] = []
    while True:
        errors.clear()
        last = len(route.deployments) - 1
        for index, deployment in enumerate(route.deployments):
            try:
                admission = await deployment.admit(weight, deadline, wait=index == last)
            except SidecarError as exc:
                if metrics is not None:
                    metrics.record_refusal(operation, deployment, exc.reason)
                errors.append(exc)
                continue
            started = time.perf_counter()
            try:
                try:
                    result = await attempt(deployment)
                except TimeoutError as exc:
                    raise upstream_timeout(deployment.provider_name, "no answer in time") from exc
            except SidecarError as exc:
                admission.failed(exc)
                exc.metadata.setdefault("deployment", deployment.name)
                if metrics is not None:
                    metrics.record_attempt(operation, deployment, exc.reason, started)
                if not falls_back(exc):
                    raise
                errors.append(exc)
                continue
            except BaseException as exc:
                admission.failed(exc)
                raise
            finally:
                admission.release()
            usage = result.usage
            admission.settle(usage.total_tokens if usage is not None else None)
            admission.succeeded()
            if metrics is not None:
                metrics.record_attempt(
                    operation, deployment, "OK", started, None, usage, result.model
                )
            call.deployment = deployment.name
            return result
        if not await rounds.again(errors):
            raise final_error(errors)
