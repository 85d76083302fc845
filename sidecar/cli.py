"""Command line: `integration-sidecar serve`, `check-config` and `injector`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from sidecar.config import ConfigError, load_config
from sidecar.injector.cli import add_injector_parser, run_injector
from sidecar.observability.logging import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integration-sidecar",
        description="A per-pod gRPC sidecar for AI APIs, caches, databases and cloud services.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--listen", help="host:port or unix:/path (overrides server.listen)")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", help="YAML config file")
    add_injector_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "injector":
        return run_injector(args)
    path = args.config if args.command == "serve" else args.file
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{path}: ok ({len(config.services)} services)")
        return 0
    configure_logging(config.server.log_level)
    from sidecar.server import ServerStartError, serve

    try:
        if config.server.event_loop == "uvloop":
            import uvloop

            return uvloop.run(serve(config, listen=args.listen))
        return asyncio.run(serve(config, listen=args.listen))
    except ServerStartError as exc:  # logged: once logging is set up, stderr is JSON only
        logging.getLogger("sidecar.server").error(str(exc))
        return 1
