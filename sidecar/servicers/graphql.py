"""GraphQLService: validates requests, picks the graphql integration by target, checks the
document locally (before the pipeline: a caller's bad document never trips a breaker or
reaches the upstream), and runs Execute, or the opening of a Subscribe, through the
target's pipeline.

- A query may be retried; a mutation only with an idempotency key.
- Subscribe opens (and initialises) its WebSocket through the pipeline, then streams
  outside it; whatever ends the stream, the subscription is closed in `finally` (sending
  `complete` upstream when it still runs), and cancellation is re-raised. Open
  subscriptions are tracked so that shutdown ends them with OK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from generated.integration.v1 import graphql_pb2, graphql_pb2_grpc
from sidecar.backends.graphql import (
    GraphQLErrorInfo,
    GraphQLResult,
    Reconnected,
    load_variables,
)
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._common import Context, call_deadline, call_through, invalid, resolve

__all__ = ["GraphQLServicer"]

_MAX_OPERATION_NAME = 1024
_ENVELOPE_BYTES = 16 * 1024  # room for a response's own fields around the data


class GraphQLServicer(graphql_pb2_grpc.GraphQLServiceServicer):
    """Serve GraphQLService over the configured graphql integrations."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int) -> None:
        """Starts loading the schema of every target with introspection on (in the
        background: start-up does not wait for the upstreams). No answer larger than
        `max_message_bytes` (the server's largest response message, less room for the
        envelope) is read from the upstream, whatever a target's max_response_size."""
        self._integrations = integrations
        self._max_answer = max(max_message_bytes - _ENVELOPE_BYTES, 1)
        self._open: set[Any] = set()
        for integration in integrations:
            if integration.type == "graphql":
                integration.backend.start()

    def _target(self, target: str) -> Integration[Any]:
        return resolve(self._integrations, "graphql", target)

    async def Execute(
        self, request: graphql_pb2.GraphQLServiceExecuteRequest, context: Context
    ) -> graphql_pb2.GraphQLServiceExecuteResponse:
        graphql = self._target(request.target)
        deadline = call_deadline(context, self._integrations.clock)
        operation = await _prepare(graphql, request, deadline)
        if operation.kind == "subscription":
            raise invalid("query", "a subscription runs through Subscribe")
        variables = await _variables(graphql, request.variables_json)
        result: GraphQLResult = await call_through(
            graphql,
            context,
            lambda: graphql.backend.execute(operation, variables, max_bytes=self._max_answer),
            idempotent=operation.kind == "query",
            deadline=deadline,
        )
        return graphql_pb2.GraphQLServiceExecuteResponse(
            data_json=result.data_json,
            errors=_errors(result.errors),
            extensions_json=result.extensions_json,
            http_status=result.http_status,
        )

    async def Subscribe(
        self, request: graphql_pb2.GraphQLServiceSubscribeRequest, context: Context
    ) -> AsyncIterator[graphql_pb2.GraphQLServiceSubscribeResponse]:
        graphql = self._target(request.target)
        deadline = call_deadline(context, self._integrations.clock)
        operation = await _prepare(graphql, request, deadline)
        if operation.kind != "subscription":
            raise invalid("query", f"a {operation.kind} runs through Execute")
        variables = await _variables(graphql, request.variables_json)
        subscription = await call_through(
            graphql,
            context,
            lambda: graphql.backend.subscribe(operation, variables, max_bytes=self._max_answer),
            deadline=deadline,
        )
        self._open.add(subscription)
        try:
            yield graphql_pb2.GraphQLServiceSubscribeResponse(
                started=graphql_pb2.GraphQLSubscriptionStarted()
            )
            async for event in subscription.events():
                if isinstance(event, Reconnected):
                    yield graphql_pb2.GraphQLServiceSubscribeResponse(
                        reconnected=graphql_pb2.GraphQLSubscriptionReconnected(
                            attempt=event.attempt, close_code=event.close_code
                        )
                    )
                    continue
                yield graphql_pb2.GraphQLServiceSubscribeResponse(
                    next=graphql_pb2.GraphQLEvent(
                        data_json=event.data_json,
                        errors=_errors(event.errors),
                        extensions_json=event.extensions_json,
                    )
                )
        finally:
            self._open.discard(subscription)
            # Shielded: a cancelled call still tells the upstream and closes its socket.
            await asyncio.shield(subscription.close())

    async def end_streams(self) -> None:
        """End every open Subscribe stream cleanly (used at shutdown)."""
        await asyncio.gather(*(sub.close() for sub in list(self._open)), return_exceptions=True)


async def _prepare(
    graphql: Integration[Any],
    request: graphql_pb2.GraphQLServiceExecuteRequest | graphql_pb2.GraphQLServiceSubscribeRequest,
    deadline: Any,
) -> Any:
    if len(request.operation_name) > _MAX_OPERATION_NAME:
        raise invalid("operation_name", f"must be at most {_MAX_OPERATION_NAME} bytes")
    return await graphql.backend.prepare(request.query, request.operation_name, deadline)


async def _variables(graphql: Integration[Any], text: str) -> dict[str, Any] | None:
    settings = graphql.settings
    return await load_variables(
        text, max_size=settings.max_variables_size, max_depth=settings.max_variables_depth
    )


def _errors(errors: Sequence[GraphQLErrorInfo]) -> list[graphql_pb2.GraphQLError]:
    return [
        graphql_pb2.GraphQLError(
            message=error.message,
            locations=[
                graphql_pb2.GraphQLErrorLocation(line=line, column=column)
                for line, column in error.locations
            ],
            path=error.path,
            extensions_json=error.extensions_json,
        )
        for error in errors
    ]
