"""The floor: a grpc.aio server whose only method returns its request, no interceptors.

Usage: python -m bench.noop_server ADDRESS [asyncio|uvloop]  (the sidecar runs on uvloop;
the bare floor on asyncio's own loop is the reference, the uvloop one shows it is fair)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc


async def _echo(request: bytes, _context: Any) -> bytes:
    return request


async def main(address: str) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Noop", {"Call": handler}),)
    )
    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    else:
        asyncio.run(main(sys.argv[1]))
