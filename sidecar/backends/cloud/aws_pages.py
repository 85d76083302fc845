"""`AwsPages`: one Paginate call's walk through an AWS listing, one request per page, by
botocore's pagination model of the operation (its input and output tokens, its
`more_results` flag).

Each `next()` is one request, run by its caller through the target's pipeline: the walk
advances only when a page arrived, so a retried page asks for the same page again. The walk
ends when AWS sends no next token (or `more_results` says no), when it sends the same token
twice (botocore calls that an error; an endless listing would be worse), or after
`max_pages` pages; a listing that stopped early hands its caller a resume token:
url-safe base64 of the JSON of the input tokens, checked against the operation when it
comes back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecar.backends.cloud.aws_shapes import LARGE_BYTES, sized_json, to_json
from sidecar.errors import InvalidArgument

__all__ = ["MAX_TOKEN_CHARS", "AwsPage", "AwsPages", "Pagination", "decode_token"]

MAX_TOKEN_CHARS: Final = 65_536
"""The longest resume token accepted back (DynamoDB keys make the longest)."""


@dataclass(frozen=True)
class AwsPage:
    """One page of a listing, as JSON."""

    page: dict[str, Any]
    number: int
    next_token: str
    """Empty on the last page."""
    request_id: str
    size: int
    """About how many bytes `page` takes as JSON."""


@dataclass(frozen=True)
class Pagination:
    """botocore's pagination model of one operation."""

    input_tokens: tuple[str, ...]
    output_tokens: tuple[str, ...]
    """JMESPath expressions over the answer, one per input token."""
    more_results: str | None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Pagination:
        def names(value: str | Sequence[str]) -> tuple[str, ...]:
            return (value,) if isinstance(value, str) else tuple(value)

        more = config.get("more_results")
        return cls(
            names(config["input_token"]),
            names(config["output_token"]),
            more if isinstance(more, str) else None,
        )


Send = Callable[[Mapping[str, Any]], Awaitable[tuple[dict[str, Any], str, int]]]
"""One request with these parameters: (the answer as botocore parsed it, its request id,
its size on the wire when known)."""


class AwsPages:
    """The pages of one listing.

    Args:
        send: sends one request (see `Send`).
        pagination: the operation's pagination model.
        parameters: the validated parameters (botocore values), resume token included.
        max_pages: pages to fetch at most.
        max_bytes: the largest page, as JSON (see `to_json`).
    """

    def __init__(
        self,
        send: Send,
        pagination: Pagination,
        parameters: Mapping[str, Any],
        *,
        max_pages: int,
        max_bytes: int,
    ) -> None:
        self._send = send
        self._pagination = pagination
        self._parameters = dict(parameters)
        self._max_pages = max_pages
        self._max_bytes = max_bytes
        self._tokens: dict[str, Any] | None = None
        self._fetched = 0
        self._done = False

    async def next(self) -> AwsPage | None:
        """The next page (one request), or None when the listing is over."""
        if self._done or self._fetched >= self._max_pages:
            return None
        parameters = {**self._parameters, **(self._tokens or {})}
        answer, request_id, size = await self._send(parameters)
        # Converted before the walk advances: a page too large fails before it is skipped.
        if size >= LARGE_BYTES:
            page, json_size = await asyncio.to_thread(sized_json, answer, self._max_bytes)
        else:
            page, json_size = sized_json(answer, self._max_bytes)
        tokens = self._next_tokens(answer)
        self._fetched += 1
        if tokens is None or tokens == self._tokens:
            self._done = True
            next_token = ""
        else:
            self._tokens = tokens
            next_token = _encode(tokens)
        return AwsPage(page, self._fetched, next_token, request_id, json_size)

    def _next_tokens(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        import jmespath  # type: ignore[import-untyped]  # botocore's dependency, no stubs

        pagination = self._pagination
        if pagination.more_results is not None and not jmespath.search(
            pagination.more_results, answer
        ):
            return None
        values = [jmespath.search(expression, answer) for expression in pagination.output_tokens]
        if all(value is None for value in values):
            return None
        return {
            name: value
            for name, value in zip(pagination.input_tokens, values, strict=False)
            if value is not None
        }


def _encode(tokens: Mapping[str, Any]) -> str:
    text = json.dumps(to_json(tokens, MAX_TOKEN_CHARS), separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def decode_token(token: str, pagination: Pagination) -> dict[str, Any]:
    """The input tokens (JSON, as parameters take them) of a resume token.

    Raises:
        InvalidArgument: not a token this operation's listing made (INVALID_REQUEST).
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise _bad_token(f"is longer than {MAX_TOKEN_CHARS} characters")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        tokens = json.loads(text)
    except (binascii.Error, ValueError):
        raise _bad_token("is not a next_token of Paginate") from None
    if not isinstance(tokens, dict) or not tokens:
        raise _bad_token("is not a next_token of Paginate")
    unknown = sorted(set(tokens) - set(pagination.input_tokens))
    if unknown:
        raise _bad_token(f"is not a next_token of this operation (it sets {unknown[0]})")
    return tokens


def _bad_token(message: str) -> InvalidArgument:
    return InvalidArgument(
        f"starting_token: {message}",
        reason="INVALID_REQUEST",
        metadata={"field": "starting_token"},
    )
