"""What flows between the steps of a transform (`Payload`), what one run may spend
(`Budget`), and the errors every step raises.

A payload holds its bytes, its parsed JSON value, or both: a chain parses JSON once, and a
step that only validates hands on the very bytes it got, so valid input passes unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sidecar.errors import InvalidArgument, ResourceExhausted

__all__ = [
    "CONTENT_TYPES",
    "Budget",
    "Kind",
    "Payload",
    "content_kind",
    "failed",
    "too_deep",
]

Kind = Literal["xml", "json", "protobuf"]

CONTENT_TYPES: Final[Mapping[Kind, str]] = {
    "xml": "application/xml",
    "json": "application/json",
    "protobuf": "application/x-protobuf",
}
"""The media type each kind is answered (and listed) with."""
_PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
_CHECK_EVERY: Final = 1024
"""Nodes walked between two looks at the clock."""


def content_kind(content_type: str) -> Kind | None:
    """The kind a media type names (parameters ignored), or None for any other type."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return "xml"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media in _PROTOBUF_TYPES:
        return "protobuf"
    return None


def failed(message: str, metadata: Mapping[str, str]) -> InvalidArgument:
    """The input cannot be converted (TRANSFORM_FAILED); `message` never quotes the input
    at length."""
    return InvalidArgument(message[:300], reason="TRANSFORM_FAILED", metadata=metadata)


def too_deep(limit: int, metadata: Mapping[str, str]) -> InvalidArgument:
    return InvalidArgument(
        f"the input is nested deeper than {limit} levels",
        reason="VALUE_TOO_LARGE",
        metadata={**metadata, "limit": "max_depth"},
    )


@dataclass
class Budget:
    """What one run may spend: its deadline on the monotonic clock and its deepest nesting.

    The event loop stops waiting for a run at its deadline; the worker notices at its next
    look at the clock (`check`) and stops too, so a slow input frees its worker soon after.
    """

    deadline: float
    max_depth: int
    metadata: Mapping[str, str]
    _ticks: int = field(default=0, repr=False)

    def expired(self) -> ResourceExhausted:
        return ResourceExhausted(
            "the transform ran past its time limit",
            reason="TRANSFORM_LIMIT_EXCEEDED",
            metadata={**self.metadata, "limit": "timeout"},
        )

    def check(self) -> None:
        """Raise once the deadline has passed."""
        if time.monotonic() >= self.deadline:
            raise self.expired()

    def tick(self) -> None:
        """`check`, every `_CHECK_EVERY` calls (a node of a walk is a call)."""
        self._ticks += 1
        if self._ticks % _CHECK_EVERY == 0:
            self.check()


_UNPARSED: Final[Any] = object()


@dataclass
class Payload:
    """Data between two steps: `raw` bytes, a parsed JSON `value`, or both."""

    kind: Kind
    raw: bytes | None = None
    value: Any = _UNPARSED

    def json(self, budget: Budget) -> Any:
        """The parsed JSON value (parsed once, nesting checked against the budget)."""
        if self.value is _UNPARSED:
            assert self.raw is not None
            self.value = parse_json(self.raw, budget)
        return self.value

    def to_bytes(self) -> bytes:
        """The payload as bytes: as it came, or compact UTF-8 JSON."""
        if self.raw is None:
            self.raw = json.dumps(self.value, ensure_ascii=False, separators=(",", ":")).encode()
        return self.raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, budget: Budget) -> Any:
    """JSON text (UTF-8, -16 or -32) to Python values; NaN and Infinity are refused."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise too_deep(budget.max_depth, budget.metadata) from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise failed(f"the input is not JSON: {exc}", budget.metadata) from None
    _check_shape(value, budget)
    return value


def _check_shape(value: Any, budget: Budget) -> None:
    """Raise when arrays and objects nest deeper than the budget allows, or a string holds
    an unpaired surrogate (`"\\ud800"` is JSON, but no UTF-8 text, protobuf string or
    answer can carry it). Walked without recursion, looking at the clock as it goes."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        budget.tick()
        if isinstance(node, str):
            _check_text(node, budget)
            continue
        if isinstance(node, dict):
            for key in node:
                _check_text(key, budget)
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > budget.max_depth:
            raise too_deep(budget.max_depth, budget.metadata)
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str, budget: Budget) -> None:
    if text.isascii():
        return
    try:
        text.encode()
    except UnicodeEncodeError:
        raise failed("the input holds an unpaired UTF-16 surrogate", budget.metadata) from None
