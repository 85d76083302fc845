"""The GraphQL capability's domain values: an answer (`GraphQLResult`, whose errors are data),
the events of a subscription, and the checks of a caller's variables.

A GraphQL answer is `{"data": ..., "errors": [...], "extensions": ...}`; `data` and
`extensions` travel on as JSON text, `errors` as `GraphQLErrorInfo`s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecar.errors import InvalidArgument, Unavailable

__all__ = [
    "OFF_LOOP_JSON_BYTES",
    "GraphQLErrorInfo",
    "GraphQLResult",
    "Reconnected",
    "SubscriptionEvent",
    "is_graphql_answer",
    "json_depth",
    "load_variables",
    "result_from",
]

OFF_LOOP_JSON_BYTES: Final = 64 * 1024
"""JSON texts larger than this are decoded in a worker thread."""


@dataclass(frozen=True, slots=True)
class GraphQLErrorInfo:
    """One entry of an answer's `errors`."""

    message: str
    locations: tuple[tuple[int, int], ...] = ()
    path: tuple[str, ...] = ()
    """Field names, and list indexes as decimal text."""
    extensions_json: str = ""


@dataclass(frozen=True, slots=True)
class GraphQLResult:
    """A GraphQL answer (or one subscription event)."""

    data_json: str = "null"
    errors: tuple[GraphQLErrorInfo, ...] = ()
    extensions_json: str = ""
    http_status: int = 0


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A subscription's WebSocket was opened again after `close_code` ended it."""

    attempt: int
    close_code: int


SubscriptionEvent = GraphQLResult | Reconnected

_NOT_AN_OBJECT: Final = "must be a JSON object (or empty)"


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            depth += 1
            stack.extend((child, depth) for child in item.values())
        elif isinstance(item, list):
            depth += 1
            stack.extend((child, depth) for child in item)
        deepest = max(deepest, depth)
    return deepest


async def load_variables(text: str, *, max_size: int, max_depth: int) -> dict[str, Any] | None:
    """The caller's variables JSON, decoded and checked (None when empty).

    Raises:
        InvalidArgument: over `max_size` bytes (VALUE_TOO_LARGE), not a JSON object, or
            nested deeper than `max_depth` (INVALID_REQUEST).
    """
    if not text.strip():
        return None
    size = len(text.encode()) if len(text) * 4 > max_size else len(text)
    if size > max_size:
        raise InvalidArgument(
            f"variables_json: is {size} bytes; the limit is {max_size}",
            reason="VALUE_TOO_LARGE",
            metadata={"field": "variables_json"},
        )
    try:
        value = (
            await asyncio.to_thread(json.loads, text)
            if size > OFF_LOOP_JSON_BYTES
            else json.loads(text)
        )
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(
            f"variables_json: not JSON: {str(exc)[:100]}",
            reason="INVALID_REQUEST",
            metadata={"field": "variables_json"},
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"variables_json: {_NOT_AN_OBJECT}",
            reason="INVALID_REQUEST",
            metadata={"field": "variables_json"},
        )
    if json_depth(value) > max_depth:
        raise InvalidArgument(
            f"variables_json: nested deeper than {max_depth} levels",
            reason="INVALID_REQUEST",
            metadata={"field": "variables_json"},
        )
    return value


def is_graphql_answer(body: Any) -> bool:
    """Whether a decoded body is a GraphQL answer (`data` or `errors`)."""
    return isinstance(body, Mapping) and ("data" in body or "errors" in body)


def result_from(body: Mapping[str, Any], http_status: int, upstream: str) -> GraphQLResult:
    """The `GraphQLResult` of a decoded GraphQL answer.

    Raises:
        Unavailable: `errors` is not a list of objects with a message (UPSTREAM_UNAVAILABLE:
            the upstream does not speak GraphQL as it should).
    """
    errors = body.get("errors") or []
    if not isinstance(errors, list):
        raise _malformed(upstream, "errors is not a list")
    extensions = body.get("extensions")
    return GraphQLResult(
        data_json=json.dumps(body.get("data"), separators=(",", ":"), ensure_ascii=False),
        errors=tuple(_error(item, upstream) for item in errors),
        extensions_json=_json_or_empty(extensions),
        http_status=http_status,
    )


def _error(item: Any, upstream: str) -> GraphQLErrorInfo:
    if not isinstance(item, Mapping):
        raise _malformed(upstream, "an error is not an object")
    locations = item.get("locations") or []
    path = item.get("path") or []
    return GraphQLErrorInfo(
        message=str(item.get("message", "")),
        locations=tuple(
            (int(spot.get("line", 0)), int(spot.get("column", 0)))
            for spot in (locations if isinstance(locations, list) else [])
            if isinstance(spot, Mapping)
        ),
        path=tuple(str(step) for step in (path if isinstance(path, Sequence) else [])),
        extensions_json=_json_or_empty(item.get("extensions")),
    )


def _json_or_empty(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _malformed(upstream: str, detail: str) -> Unavailable:
    return Unavailable(
        f"{upstream} answered something that is not a GraphQL response: {detail}",
        reason="UPSTREAM_UNAVAILABLE",
        metadata={"target": upstream, "upstream_status": "malformed"},
    )
