"""`MappedErrors`: the context manager every connection type uses to re-raise its client
library's exceptions as `sidecar.errors` types, given that library's mapping function."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sidecar.errors import SidecarError

__all__ = ["ErrorMapping", "MappedErrors"]

ErrorMapping = Callable[[BaseException, str], SidecarError | None]
"""(the library's exception, the target) -> the sidecar error, or None to let it through."""


class MappedErrors:
    """Re-raise a mapped exception `from` the original, so logs keep the library's message.

    Stateless, so an owner builds one and enters it on every call: a plain class costs far
    less per call than a `@contextmanager` generator.
    """

    __slots__ = ("_map", "_target")

    def __init__(self, target: str, mapping: ErrorMapping) -> None:
        self._target = target
        self._map = mapping

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, SidecarError):
            return
        mapped = self._map(exc, self._target)
        if mapped is not None:
            raise mapped from exc
