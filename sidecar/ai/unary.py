"""Embeddings over a route: the unary twin of `fallback.stream_chat`.

Deployments are tried in order with the same admission (each deployment's streaming
pipeline, with no first chunk: the answer comes whole), the same fallback rule (UNAVAILABLE,
RESOURCE_EXHAUSTED, an open circuit or a timeout moves the call on) and the same retry
rounds. With nothing streamed, any failure may fall back; the first deployment to answer
wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sidecar.ai.deployment import Deployment
from sidecar.ai.fallback import RoutedCall
from sidecar.ai.rounds import Rounds, calm, falls_back, final_error, panics
from sidecar.ai.route import Route
from sidecar.ai.tokens import estimate_embedding_tokens
from sidecar.backends.ai.base import EmbedResult
from sidecar.backends.ai.errors import upstream_timeout
from sidecar.errors import SidecarError
from sidecar.observability.tracing import client_span
from sidecar.resilience import Deadline

__all__ = ["embed"]


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


async def _unary(
    route: Route,
    weight: int,
    deadline: Deadline | None,
    call: RoutedCall,
    operation: str,
    attempt: Callable[[Deployment], Awaitable[EmbedResult]],
) -> EmbedResult:
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
