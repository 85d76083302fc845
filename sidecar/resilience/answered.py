"""`Answered`: an awaitable holding an answer that needed no upstream call (a value a near
cache holds), so no resilience policy has anything to guard.

A backend method may return one instead of a coroutine; a caller that allows it
(`call_through(..., may_answer_locally=True)`) hands the value back without running the
pipeline: no bulkhead slot, no rate-limit token, no breaker verdict for a call that made none.
Awaiting it directly gives the value too.

    def get(self, key: str) -> Awaitable[bytes | None]:
        held = self._held.lookup(key)
        return Answered(held) if held is not MISS else self._read_through(key)
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

__all__ = ["Answered"]

T = TypeVar("T")


class Answered(Generic[T]):
    """An answer already in hand."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self.value
        yield  # a generator: awaiting it returns at once
