"""The injector's HTTPS server (aiohttp): `POST /mutate` answers AdmissionReviews, `GET /healthz`
serves the Deployment's probes, `GET /metrics` the Prometheus counters.

Kubernetes sends one AdmissionReview per pod created; the decision is pure CPU in microseconds,
so requests are handled on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from .mutate import MalformedReview, review
from .settings import SidecarSettings
from .tls import ReloadingCertificate

__all__ = ["MAX_REVIEW_BYTES", "RunningWebhook", "make_app", "start_webhook"]

_log = logging.getLogger("sidecar.injector")

MAX_REVIEW_BYTES = 4 * 1024 * 1024
"""Largest AdmissionReview accepted (413 past it); a pod object is at most ~1.5 MiB in etcd."""


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    reviews: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.reviews = Counter(
            "integration_sidecar_injector_reviews",
            "AdmissionReviews answered, by outcome (injected, skipped, refused, malformed).",
            ["outcome"],
            registry=self.registry,
        )


def make_app(defaults: SidecarSettings) -> web.Application:
    """The aiohttp application, without a listener (tests may serve it however they like)."""
    metrics = _Metrics()

    async def mutate(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            answer, decision = review(body, defaults)
        except (ValueError, MalformedReview) as exc:  # JSONDecodeError is a ValueError
            metrics.reviews.labels("malformed").inc()
            _log.warning("malformed AdmissionReview, answered 400: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        request_part = body["request"]
        pod = request_part.get("object")
        metadata = pod.get("metadata") if isinstance(pod, dict) else None
        name = None
        if isinstance(metadata, dict):
            name = metadata.get("name") or metadata.get("generateName")
        outcome = "injected" if decision.patch else "refused" if decision.warnings else "skipped"
        metrics.reviews.labels(outcome).inc()
        _log.log(
            logging.WARNING if decision.warnings else logging.INFO,
            "pod %s/%s: %s",
            request_part.get("namespace"),
            name,
            decision.reason,
        )
        return web.json_response(answer)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def prometheus(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


@dataclass
class RunningWebhook:
    """A started webhook: its port, its certificate, and how to stop it."""

    port: int
    certificate: ReloadingCertificate
    _runner: web.AppRunner
    _watcher: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop watching the certificate and close the listener and open connections."""
        self._watcher.cancel()
        await asyncio.gather(self._watcher, return_exceptions=True)
        await self._runner.cleanup()


async def start_webhook(
    defaults: SidecarSettings,
    *,
    host: str,
    port: int,
    cert_file: str,
    key_file: str,
    reload_interval: float,
) -> RunningWebhook:
    """Serve the webhook over HTTPS on host:port (0: a free port); returns once listening.

    Raises:
        OSError, ssl.SSLError: unreadable TLS files, or the address is taken.
    """
    certificate = ReloadingCertificate(cert_file, key_file)
    runner = web.AppRunner(make_app(defaults), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=certificate.context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    watcher = asyncio.create_task(certificate.watch(reload_interval))
    _log.info("injector listening on https://%s:%d", host, bound)
    return RunningWebhook(bound, certificate, runner, watcher)


async def serve_until_signalled(start: Callable[[], Awaitable[RunningWebhook]]) -> None:
    """Start the webhook and serve until SIGTERM or SIGINT."""
    import signal

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = await start()
    await stopping.wait()
    _log.info("injector stopping")
    await running.stop()
