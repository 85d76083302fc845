"""`integration-sidecar injector`: its arguments, and running it.

The sidecar defaults given here are checked by the same code that checks a pod's annotations
(each `--x` is the default of annotation `integration-sidecar.io/x`), so a bad default fails at
start with the same message a bad annotation would give.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys

from .settings import (
    ANNOTATION_PREFIX,
    ANNOTATIONS,
    InvalidAnnotation,
    SidecarSettings,
    settings_for,
)

__all__ = ["add_injector_parser", "run_injector"]

_DEFAULTS = (
    "mode",
    "probes",
    "port",
    "config-map",
    "secret",
    "image",
    "cpu-request",
    "cpu-limit",
    "memory-request",
    "memory-limit",
    "drain-seconds",
)


def add_injector_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `injector` subcommand to the main parser."""
    parser = commands.add_parser(
        "injector", help="serve the Kubernetes mutating admission webhook that injects the sidecar"
    )
    parser.add_argument("--listen", default="0.0.0.0:8443", help="host:port (default %(default)s)")
    parser.add_argument("--tls-cert", required=True, help="PEM certificate chain file")
    parser.add_argument("--tls-key", required=True, help="PEM private key file")
    parser.add_argument(
        "--tls-reload-interval",
        type=float,
        default=10.0,
        help="seconds between checks of the TLS files for a new certificate (default 10)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    defaults = parser.add_argument_group("sidecar defaults (a pod's annotations override them)")
    for name in _DEFAULTS:
        annotation = ANNOTATION_PREFIX + name
        defaults.add_argument(
            f"--{name}", required=name == "image", help=f"{ANNOTATIONS[annotation]} ({annotation})"
        )
    defaults.add_argument(
        "--unix-socket", action="store_true", help=ANNOTATIONS[ANNOTATION_PREFIX + "unix-socket"]
    )
    defaults.add_argument(
        "--sidecar-log-level",
        choices=("debug", "info", "warning", "error"),
        help="the sidecar's log level (integration-sidecar.io/log-level)",
    )


def sidecar_defaults(args: argparse.Namespace) -> SidecarSettings:
    """The injector's defaults from its arguments.

    Raises:
        InvalidAnnotation: an argument's value is malformed (the message names the argument).
    """
    given = {name: getattr(args, name.replace("-", "_")) for name in _DEFAULTS}
    if args.unix_socket:
        given["unix-socket"] = "true"
    if args.sidecar_log_level:
        given["log-level"] = args.sidecar_log_level
    annotations = {ANNOTATION_PREFIX + k: str(v) for k, v in given.items() if v is not None}
    try:
        return settings_for(SidecarSettings(image=args.image), annotations)
    except InvalidAnnotation as exc:
        raise InvalidAnnotation(str(exc).replace(ANNOTATION_PREFIX, "--")) from None


def run_injector(args: argparse.Namespace) -> int:
    """Run the injector until SIGTERM or SIGINT; returns the exit code."""
    from sidecar.observability.logging import configure_logging

    from .webhook import RunningWebhook, serve_until_signalled, start_webhook

    try:
        defaults = sidecar_defaults(args)
    except InvalidAnnotation as exc:
        print(exc, file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not host:
        print(f"--listen {args.listen!r}: use host:port, e.g. 0.0.0.0:8443", file=sys.stderr)
        return 2
    configure_logging(args.log_level)

    async def start() -> RunningWebhook:
        return await start_webhook(
            defaults,
            host=host.strip("[]"),
            port=int(port),
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            reload_interval=args.tls_reload_interval,
        )

    try:
        asyncio.run(serve_until_signalled(start))
    except (OSError, ssl.SSLError) as exc:
        logging.getLogger("sidecar.injector").error("injector cannot start: %s", exc)
        return 1
    return 0
