"""Graceful shutdown of inbound calls: once draining starts, a new call is refused with
UNAVAILABLE and reason SHUTTING_DOWN, while the calls already in flight run to the end.

grpc.aio's own `server.stop(grace)` closes the listener and the connections at once, so a
call arriving during the grace period fails in the client library with no reason at all. The
sidecar drains first and stops the grpc server only once the calls in flight are done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sidecar.errors import Unavailable
from sidecar.interceptors._handlers import Behavior

__all__ = ["Drain"]


class Drain:
    """Counts the calls in flight, and refuses new ones once `refuse_new_calls` was called."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._draining = False
        self._idle = asyncio.Event()

    def tracked(self, behavior: Behavior) -> Behavior:
        """`behavior`, counted while it runs and refused while draining."""

        async def counted(request: Any, context: Any) -> Any:
            if self._draining:
                raise Unavailable("the sidecar is shutting down", reason="SHUTTING_DOWN")
            self._in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                self._in_flight -= 1
                if self._draining and self._in_flight == 0:
                    self._idle.set()

        return counted

    def refuse_new_calls(self) -> None:
        """From now on, a new call is answered UNAVAILABLE / SHUTTING_DOWN."""
        self._draining = True
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is in flight (after `refuse_new_calls`)."""
        await self._idle.wait()
