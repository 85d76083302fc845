"""`GraphQLHttp`: a GraphQL API over its http connection (queries and mutations, POSTed as
JSON) and WebSockets of its own (subscriptions, `graphql-transport-ws`).

- With `introspection: true` the schema is loaded in the background from start-up
  (`start`); calls that arrive while it loads wait for it within their deadline. A failed
  load is logged and tried again at most every `_SCHEMA_RETRY` seconds; meanwhile
  documents are only parsed locally and the upstream validates them.
- Every document is parsed once and kept in a bounded LRU keyed by its SHA-256
  (`DocumentCache`), with its validation result.
- An answer is read up to `max_response_size` bytes; GraphQL errors are data, including a
  4xx whose body is a GraphQL answer. Other statuses map as for every http connection.
- Subscriptions open one WebSocket each (`max_subscriptions` at once) through a
  `WebSocketConnection` made from the service's `subscriptions` settings; `close` closes
  them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from sidecar.backends.graphql.base import (
    OFF_LOOP_JSON_BYTES,
    GraphQLResult,
    is_graphql_answer,
    result_from,
)
from sidecar.backends.graphql.documents import DocumentCache, PreparedOperation
from sidecar.backends.graphql.transport_ws import (
    PROTOCOL,
    ReconnectPolicy,
    TransportWsSubscription,
)
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import TimeoutsConfig
from sidecar.config.services.graphql import GraphQLServiceConfig
from sidecar.config.websocket import WebSocketEndpoint
from sidecar.connections.http.connection import HttpConnection
from sidecar.connections.http.errors import (
    error_message,
    mapped_http_errors,
    parse_retry_after,
    status_error,
)
from sidecar.connections.websocket import WebSocketConnection
from sidecar.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from sidecar.resilience import Clock, Deadline

if TYPE_CHECKING:
    from graphql import GraphQLSchema
    from websockets.asyncio.client import ClientConnection

__all__ = ["SPEC", "GraphQLHttp"]

_log = logging.getLogger("sidecar.backends.graphql")
_SCHEMA_RETRY: Final = 30.0
"""Seconds between attempts to load a schema that failed to load."""
_DATA_STATUSES: Final = frozenset({400, 422})
"""Statuses whose GraphQL answer is data (GraphQL over HTTP answers 400 for a document the
server could not validate)."""


def _websocket_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


class GraphQLHttp:
    """One GraphQL API.

    Args:
        name: The service's name (errors carry it as `target`).
        settings: Its settings.
        connection: The http connection it POSTs over.
        timeouts: Its timeouts (`connect` also bounds a subscription's handshake).
        clock: Sleeps of a subscription's reconnection backoff.
    """

    def __init__(
        self,
        name: str,
        settings: GraphQLServiceConfig,
        connection: HttpConnection,
        timeouts: TimeoutsConfig,
        clock: Clock,
    ) -> None:
        self.name = name
        self.settings = settings
        self._http = connection
        base = connection.base_url or ""
        self.url: str = (
            settings.base_url
            if settings.connection is None and settings.base_url is not None
            else base.rstrip("/") + settings.path
        )
        auth = settings.auth.header_pair()
        self._auth_headers: dict[str, str] = dict([auth]) if auth is not None else {}
        self._headers = {
            **settings.headers,
            **self._auth_headers,
            "content-type": "application/json",
            "accept": "application/graphql-response+json, application/json",
        }
        self._metadata = {"target": name}
        self._documents = DocumentCache(
            max_entries=settings.query_cache_size, max_tokens=settings.max_query_tokens
        )
        self._clock = clock
        self._schema: GraphQLSchema | None = None
        self._schema_task: asyncio.Task[None] | None = None
        self._schema_failed_at: float | None = None
        subscriptions = settings.subscriptions
        ws_url = subscriptions.url or _websocket_url(self.url)
        tls = subscriptions.tls or settings.tls
        self._sockets = WebSocketConnection(
            name,
            WebSocketEndpoint(
                url=ws_url,
                headers=dict(settings.headers),
                tls=tls if ws_url.startswith("wss:") else type(tls)(),
            ),
            timeouts,
        )
        self._reconnect = ReconnectPolicy(
            enabled=subscriptions.reconnect.enabled,
            max_attempts=subscriptions.reconnect.max_attempts,
            base_delay=subscriptions.reconnect.base_delay,
            max_delay=subscriptions.reconnect.max_delay,
        )
        self._open_subscriptions = 0

    @property
    def documents(self) -> DocumentCache:
        """The parsed-document cache (its size, hits and misses)."""
        return self._documents

    @property
    def schema(self) -> GraphQLSchema | None:
        """The introspected schema, once loaded."""
        return self._schema

    @property
    def open_subscriptions(self) -> int:
        return self._open_subscriptions

    # ---- start-up: the schema -------------------------------------------------------------

    def start(self) -> None:
        """Begin loading the schema in the background (with introspection on). Needs a
        running loop; no-op when already loading or loaded."""
        if not self.settings.introspection or self._schema is not None:
            return
        if self._schema_task is None or self._schema_task.done():
            self._schema_task = asyncio.get_running_loop().create_task(
                self._load_schema(), name=f"graphql-introspection:{self.name}"
            )

    async def _load_schema(self) -> None:
        from graphql import build_client_schema, get_introspection_query

        try:
            result = await self._post({"query": get_introspection_query(descriptions=False)})
            if result.errors or result.data_json == "null":
                raise Unavailable(
                    f"{self.name} answered the introspection query with errors: "
                    + "; ".join(error.message for error in result.errors[:3]),
                    reason="UPSTREAM_UNAVAILABLE",
                    metadata=self._metadata,
                )
            data = json.loads(result.data_json)
            self._schema = await asyncio.to_thread(build_client_schema, data)
            self._schema_failed_at = None
            _log.info("graphql schema loaded", extra={"integration": self.name})
        except Exception as exc:
            self._schema_failed_at = self._clock.monotonic()
            _log.warning(
                "graphql introspection failed; documents are validated by the upstream",
                extra={"integration": self.name, "error": repr(exc)[:300]},
            )

    async def _current_schema(self, deadline: Deadline | None) -> GraphQLSchema | None:
        if not self.settings.introspection or self._schema is not None:
            return self._schema
        failed = self._schema_failed_at
        if failed is not None and self._clock.monotonic() - failed >= _SCHEMA_RETRY:
            self._schema_failed_at = None
            self.start()
        task = self._schema_task
        if task is None and failed is None:
            self.start()
            task = self._schema_task
        if task is not None and not task.done():
            remaining = deadline.remaining() if deadline is not None else None
            with contextlib.suppress(TimeoutError):  # then validated upstream this time
                await asyncio.wait_for(asyncio.shield(task), remaining)
        return self._schema

    # ---- calls ------------------------------------------------------------------------------

    async def prepare(
        self, query: str, operation_name: str, deadline: Deadline | None = None
    ) -> PreparedOperation:
        """Check a caller's document locally: size, syntax, and (with a schema) validity.

        Raises:
            InvalidArgument: over max_query_size (VALUE_TOO_LARGE); does not parse or
                validate (INVALID_REQUEST, graphql-core's messages listed).
        """
        limit = self.settings.max_query_size
        if not query.strip():
            raise InvalidArgument(
                "query: must not be empty", reason="INVALID_REQUEST", metadata={"field": "query"}
            )
        if len(query) > limit // 4 and len(query.encode()) > limit:
            raise InvalidArgument(
                f"query: is over {limit} bytes",
                reason="VALUE_TOO_LARGE",
                metadata={"field": "query"},
            )
        schema = await self._current_schema(deadline)
        return await self._documents.prepare(query, operation_name or None, schema)

    async def execute(
        self,
        operation: PreparedOperation,
        variables: Mapping[str, Any] | None,
        *,
        max_bytes: int | None = None,
    ) -> GraphQLResult:
        """POST one query or mutation; the answer with its GraphQL errors as data.

        Raises:
            Unavailable, DeadlineExceeded, ResourceExhausted, FailedPrecondition, ...: the
                upstream failed or refused the request without a GraphQL answer.
        """
        body: dict[str, Any] = {"query": operation.text}
        if variables is not None:
            body["variables"] = variables
        if operation.operation_name:
            body["operationName"] = operation.operation_name
        return await self._post(body, max_bytes)

    async def _post(self, body: Mapping[str, Any], max_bytes: int | None = None) -> GraphQLResult:
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        limit = min(self.settings.max_response_size, max_bytes or self.settings.max_response_size)
        client = self._http.client
        with mapped_http_errors(self.name, metadata=self._metadata):
            async with client.stream(
                "POST",
                self.url,
                content=content,
                headers=self._headers,
                follow_redirects=False,  # a query and its credentials go to the endpoint only
            ) as response:
                chunks: list[bytes] = []
                size = 0
                with mapped_http_errors(self.name, metadata=self._metadata, opening=False):
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ResourceExhausted(
                                f"{self.name} answered more than max_response_size ({limit} bytes)",
                                reason="RESULT_TOO_LARGE",
                                metadata={**self._metadata, "limit": str(limit)},
                            )
                        chunks.append(chunk)
                status = response.status_code
                headers = response.headers
        data = b"".join(chunks)
        if status < 300 or status in _DATA_STATUSES:
            # Decoding and re-encoding `data` is CPU work: off the loop when large.
            result = (
                await asyncio.to_thread(_graphql_result, data, status, self.name)
                if len(data) > OFF_LOOP_JSON_BYTES
                else _graphql_result(data, status, self.name)
            )
            if result is not None:
                return result
        if 300 <= status < 400:
            raise FailedPrecondition(
                f"{self.name} answered HTTP {status} (a redirect, not followed): configure "
                "the final URL",
                reason="UPSTREAM_REJECTED",
                metadata={**self._metadata, "upstream_status": str(status)},
            )
        if status >= 400:
            raise status_error(
                self.name,
                status,
                error_message(data[:2048]),
                parse_retry_after(headers),
                metadata=self._metadata,
            )
        raise Unavailable(
            f"{self.name} answered HTTP {status} without a GraphQL response",
            reason="UPSTREAM_UNAVAILABLE",
            metadata={**self._metadata, "upstream_status": str(status)},
        )

    async def subscribe(
        self,
        operation: PreparedOperation,
        variables: Mapping[str, Any] | None,
        *,
        max_bytes: int | None = None,
    ) -> TransportWsSubscription:
        """Open the WebSocket, initialise it and subscribe (one operation).

        Raises:
            ResourceExhausted: max_subscriptions are open (OVER_CAPACITY).
            SidecarError: the handshake, the init or the upstream failed.
        """
        if self._open_subscriptions >= self.settings.max_subscriptions:
            raise ResourceExhausted(
                f"{self.name} has its {self.settings.max_subscriptions} subscriptions open",
                reason="OVER_CAPACITY",
                metadata={**self._metadata, "limit": str(self.settings.max_subscriptions)},
            )
        payload: dict[str, Any] = {"query": operation.text}
        if variables is not None:
            payload["variables"] = variables
        if operation.operation_name:
            payload["operationName"] = operation.operation_name
        settings = self.settings.subscriptions
        limit = min(self.settings.max_response_size, max_bytes or self.settings.max_response_size)
        subscription = TransportWsSubscription(
            self.name,
            lambda: self._open_socket(limit),
            init_payload={**settings.init_payload, **self._auth_headers},
            operation=payload,
            init_timeout=settings.connection_init_timeout,
            reconnect=self._reconnect,
            clock=self._clock,
            on_close=self._closed_one,
        )
        self._open_subscriptions += 1
        try:
            await subscription.start()
        except BaseException:
            await asyncio.shield(subscription.close())
            raise
        return subscription

    def _closed_one(self) -> None:
        self._open_subscriptions -= 1

    async def _open_socket(self, max_size: int) -> ClientConnection:
        settings = self.settings.subscriptions
        socket = await self._sockets.open(
            "",
            self._auth_headers,
            (PROTOCOL,),
            max_size=max_size,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            open_timeout=settings.connection_init_timeout,
        )
        self._sockets.forget(socket)  # each subscription closes its own
        return socket

    # ---- health and shutdown ----------------------------------------------------------------

    async def ping(self) -> None:
        """`{ __typename }`: the cheapest query every GraphQL server answers.

        Raises:
            SidecarError: the upstream is down or refuses it.
        """
        await self._post({"query": "{ __typename }"})

    async def close(self) -> None:
        """Stop loading the schema (subscriptions end as their calls end; the http
        connection is closed by its owner)."""
        task = self._schema_task
        if task is not None and not task.done():
            task.cancel()
        await self._sockets.close()


def _graphql_result(data: bytes, status: int, upstream: str) -> GraphQLResult | None:
    """The GraphQL answer in `data`, or None when it holds none."""
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(answer, Mapping) and is_graphql_answer(answer)):
        return None
    return result_from(answer, status, upstream)


def _build(context: BuildContext[GraphQLServiceConfig]) -> GraphQLHttp:
    connection = context.connection
    assert isinstance(connection, HttpConnection)
    return GraphQLHttp(
        context.name, context.settings, connection, context.policies.timeouts, context.clock
    )


SPEC = BackendSpec(
    type="graphql",
    backend="http",
    settings=GraphQLServiceConfig,
    build=_build,
    connection_type="http",
)
