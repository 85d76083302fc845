"""Test kit: run the real sidecar in-process on a free port, and a fake clock.

Usage:
    async with serve_for_test() as sidecar:
        channel = grpc.aio.insecure_channel(sidecar.address)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sidecar.config import Config, load_config, parse_config
from sidecar.resilience import SYSTEM_CLOCK, Clock
from sidecar.server import RunningServer, start_server
from sidecar.testing.clock import FakeClock

__all__ = ["FakeClock", "serve_for_test"]


@asynccontextmanager
async def serve_for_test(
    config: Config | str | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    **start_options: object,
) -> AsyncIterator[RunningServer]:
    """Start the real grpc.aio server on 127.0.0.1 and a free port; stop it afterwards.

    Args:
        config: a Config, YAML text, or None for the embedded defaults.
        clock: time source for the resilience policies.
        start_options: passed to `start_server` (for example `metric_readers`).
    """
    if config is None:
        config = load_config(None)
    elif isinstance(config, str):
        config = parse_config(config)
    running = await start_server(
        config,
        listen="127.0.0.1:0",
        clock=clock,
        **start_options,  # type: ignore[arg-type]
    )
    try:
        yield running
    finally:
        await running.stop(grace=1.0)
