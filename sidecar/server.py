"""Start-up, the grpc.aio server, and graceful shutdown.

`start_server` builds everything inside the running loop and returns a handle; `serve` runs
until SIGTERM or SIGINT, then: health turns NOT_SERVING, new calls are refused with
UNAVAILABLE / SHUTTING_DOWN, open Subscribe streams end with OK, in-flight calls get
`shutdown_grace` to finish, and the backends close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.backends.spec import PipelineOwner
from sidecar.config import Config
from sidecar.config.secrets import secret_settings
from sidecar.interceptors.auth import BearerAuth
from sidecar.interceptors.inbound import InboundLayer
from sidecar.interceptors.permissions import Permissions, PolicyError
from sidecar.interceptors.rate_limit import InboundRateLimits
from sidecar.interceptors.tracing import ServerTracing
from sidecar.listener import ListenerError, bind
from sidecar.observability.logging import forget, redact
from sidecar.observability.metrics import Metrics
from sidecar.observability.prometheus import PrometheusEndpoint
from sidecar.observability.tracing import Tracing
from sidecar.reflection import enable_reflection
from sidecar.resilience import SYSTEM_CLOCK, Clock, TokenBucketOptions
from sidecar.runtime import Integrations, build_integrations
from sidecar.runtime.health import HealthMonitor
from sidecar.runtime.recovery import RecoveryProber
from sidecar.runtime.telemetry import otlp_metric_reader, start_tracing, watch_integrations

__all__ = ["SERVICE_NAMES", "RunningServer", "serve", "start_server"]

_log = logging.getLogger("sidecar.server")


HEALTH_SERVICE = "grpc.health.v1.Health"
_SOCKET_PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class _Service:
    """One proto service: its full name, the capability type whose default integration its
    health follows (None: always up), and how to add its servicer to a server (some read
    the server's own settings, such as its largest message).

    `add` imports the servicer and its generated module when it runs: a service the
    configuration does not use costs no import at start-up (tests/startup keeps it so)."""

    name: str
    capability: str | None
    add: Callable[[Integrations, grpc.aio.Server, Config], Any]


def _add_cache(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import cache_pb2_grpc
    from sidecar.servicers.cache import CacheServicer

    servicer = CacheServicer(integrations)
    cache_pb2_grpc.add_CacheServiceServicer_to_server(servicer, server)
    return servicer


def _add_pubsub(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import pubsub_pb2_grpc
    from sidecar.servicers.pubsub import PubSubServicer

    servicer = PubSubServicer(integrations, max_message_bytes=config.server.max_send_message_size)
    pubsub_pb2_grpc.add_PubSubServiceServicer_to_server(servicer, server)
    return servicer


def _add_sql(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import sql_pb2_grpc
    from sidecar.servicers.sql import SqlServicer

    servicer = SqlServicer(integrations, max_message_bytes=config.server.max_send_message_size)
    sql_pb2_grpc.add_SqlServiceServicer_to_server(servicer, server)
    return servicer


def _add_ai(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import ai_pb2_grpc
    from sidecar.ai import AIConfigError
    from sidecar.servicers.ai import AIServicer

    try:
        servicer = AIServicer(integrations, clock=integrations.clock, meter=integrations.meter)
    except AIConfigError as exc:  # an alias names a service that is not configured
        raise ServerStartError(f"invalid AI configuration: {exc}") from exc
    ai_pb2_grpc.add_AIServiceServicer_to_server(servicer, server)
    return servicer


def _add_objectstore(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import objectstore_pb2_grpc
    from sidecar.servicers.objectstore import ObjectStoreServicer

    servicer = ObjectStoreServicer(integrations)
    objectstore_pb2_grpc.add_ObjectStoreServiceServicer_to_server(servicer, server)
    return servicer


def _add_http(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import http_pb2_grpc
    from sidecar.servicers.http import HttpServicer

    servicer = HttpServicer(integrations, max_message_bytes=config.server.max_send_message_size)
    http_pb2_grpc.add_HttpServiceServicer_to_server(servicer, server)
    return servicer


def _add_aws(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import aws_pb2_grpc
    from sidecar.servicers.aws import AwsServicer

    servicer = AwsServicer(integrations, max_message_bytes=config.server.max_send_message_size)
    aws_pb2_grpc.add_AwsServiceServicer_to_server(servicer, server)
    return servicer


def _add_graphql(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import graphql_pb2_grpc
    from sidecar.servicers.graphql import GraphQLServicer

    servicer = GraphQLServicer(integrations, max_message_bytes=config.server.max_send_message_size)
    graphql_pb2_grpc.add_GraphQLServiceServicer_to_server(servicer, server)
    return servicer


def _add_websocket(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import websocket_pb2_grpc
    from sidecar.servicers.websocket import WebSocketServicer

    servicer = WebSocketServicer(
        integrations, max_message_bytes=config.server.max_send_message_size
    )
    websocket_pb2_grpc.add_WebSocketServiceServicer_to_server(servicer, server)
    return servicer


def _add_queue(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import queue_pb2_grpc
    from sidecar.backends.queue import link_dead_letters
    from sidecar.servicers.queue import QueueServicer

    # a memory queue's dead_letter names another memory queue service (checked by the config)
    link_dead_letters({i.name: i.backend for i in integrations if i.type == "queue"})
    servicer = QueueServicer(integrations)
    queue_pb2_grpc.add_QueueServiceServicer_to_server(servicer, server)
    return servicer


def _add_transform(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import transform_pb2_grpc
    from sidecar.servicers.transform import TransformServicer

    servicer = TransformServicer(
        integrations.transforms, max_message_bytes=config.server.max_send_message_size
    )
    transform_pb2_grpc.add_TransformServiceServicer_to_server(servicer, server)
    return servicer


def _add_admin(integrations: Integrations, server: grpc.aio.Server, config: Config) -> Any:
    from generated.integration.v1 import admin_pb2_grpc
    from sidecar.servicers.admin import AdminServicer

    servicer = AdminServicer(integrations)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    return servicer


# Every proto service the sidecar serves. A new capability adds one line here.
SERVICES: tuple[_Service, ...] = (
    _Service("integration.v1.CacheService", "cache", _add_cache),
    _Service("integration.v1.PubSubService", "pubsub", _add_pubsub),
    _Service("integration.v1.SqlService", "sql", _add_sql),
    _Service("integration.v1.AIService", "ai_model", _add_ai),
    _Service("integration.v1.ObjectStoreService", "objectstore", _add_objectstore),
    _Service("integration.v1.HttpService", "api", _add_http),
    _Service("integration.v1.AwsService", "cloud", _add_aws),
    _Service("integration.v1.GraphQLService", "graphql", _add_graphql),
    _Service("integration.v1.WebSocketService", "websocket", _add_websocket),
    _Service("integration.v1.QueueService", "queue", _add_queue),
    _Service("integration.v1.TransformService", None, _add_transform),
    _Service("integration.v1.AdminService", None, _add_admin),
)
SERVICE_NAMES = (*(service.name for service in SERVICES), HEALTH_SERVICE)


class ServerStartError(Exception):
    """The server could not start (for example, the listen address is taken)."""


@dataclass
class RunningServer:
    """A started sidecar: the gRPC server and what it serves."""

    server: grpc.aio.Server
    address: str
    config: Config
    integrations: Integrations
    health: health.aio.HealthServicer
    monitor: HealthMonitor
    recovery: RecoveryProber
    inbound: InboundLayer
    servicers: dict[str, Any]
    meter_provider: MeterProvider | None
    prometheus: PrometheusEndpoint | None = None
    tracing: Tracing | None = None
    redacted: tuple[str, ...] = ()
    """The secrets this server registered for redaction, forgotten once it has stopped."""
    _stopped: bool = field(default=False, repr=False)

    async def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully within `grace` seconds (default: `server.shutdown_grace`)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.server.shutdown_grace if grace is None else grace
        _log.info("shutting down", extra={"grace_seconds": grace})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self.health.enter_graceful_shutdown()
        await self.monitor.stop()
        await self.recovery.stop()
        # The listener stays open while calls in flight finish, so that a new call is told
        # why it is refused (SHUTTING_DOWN) rather than finding the port closed.
        self.inbound.drain.refuse_new_calls()
        # Streams never end by themselves: end them now so they close with OK, while
        # unary calls already running keep their grace period.
        await asyncio.gather(
            *(s.end_streams() for s in self.servicers.values() if hasattr(s, "end_streams"))
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.inbound.drain.wait_idle()
        await self.server.stop(max(deadline - loop.time(), 0.0))
        await self.integrations.close()
        if self.meter_provider is not None:  # a pushing reader's last export: off the loop
            await asyncio.to_thread(self.meter_provider.shutdown)
        if self.prometheus is not None:
            self.prometheus.close()
        if self.tracing is not None:  # exports the last spans: network I/O, off the loop
            await asyncio.to_thread(self.tracing.shutdown)
        _log.info("stopped")
        forget(self.redacted)


def _server_options(config: Config) -> list[tuple[str, Any]]:
    server = config.server
    keepalive = server.keepalive
    return [
        ("grpc.max_receive_message_length", server.max_receive_message_size),
        ("grpc.max_send_message_length", server.max_send_message_size),
        ("grpc.keepalive_time_ms", int(keepalive.time * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive.min_ping_interval * 1000)),
        # A second process on the same port must fail loudly, not share it silently.
        ("grpc.so_reuseport", 0),
    ]


def _inbound_layer(
    config: Config, metrics: Metrics | None, clock: Clock, tracing: Tracing | None = None
) -> InboundLayer:
    server = config.server
    auth = BearerAuth(server.auth.accepted_tokens()) if server.auth.enabled else None
    rate_limits = None
    if server.inbound_rate_limits:
        limits = {
            method: TokenBucketOptions(
                requests_per_second=limit.requests_per_second,
                burst_size=limit.burst_size,
                max_queue=0,
            )
            for method, limit in server.inbound_rate_limits.items()
        }
        rate_limits = InboundRateLimits(limits, clock)
    return InboundLayer(
        metrics,
        access_log=server.access_log,
        auth=auth,
        rate_limits=rate_limits,
        tracing=ServerTracing(tracing) if tracing is not None else None,
    )


def _metrics(
    config: Config, readers: Sequence[MetricReader], integrations: Integrations
) -> tuple[MeterProvider | None, Metrics | None, PrometheusEndpoint | None]:
    """The meter provider, the request metrics and the `/metrics` endpoint, as configured."""
    settings = config.integration.metrics
    if not settings.enabled:
        return None, None, None
    prometheus = (
        PrometheusEndpoint(settings.prometheus_listen) if settings.prometheus_listen else None
    )
    pushed = otlp_metric_reader(settings)
    all_readers = [
        *readers,
        *([prometheus.reader] if prometheus else []),
        *([pushed] if pushed else []),
    ]
    provider = MeterProvider(metric_readers=all_readers)
    integrations.meter = provider.get_meter("integration-sidecar")
    metrics = Metrics(integrations.meter, integrations.breaker_states)
    watch_integrations(metrics, integrations)
    if pushed is not None:
        metrics.push_rpc_durations()
    for integration in integrations:
        if integration.pipeline is not None:
            integration.pipeline.add_listener(metrics.record_resilience_event)
        if isinstance(integration.backend, PipelineOwner):  # every deployment's, now and later
            integration.backend.add_listener(metrics.record_resilience_event)
    if prometheus is not None:
        prometheus.add_collector(metrics.durations.prometheus_collector())
        prometheus.add_collector(metrics.rpc_durations.prometheus_collector())
    return provider, metrics, prometheus


async def start_server(
    config: Config,
    *,
    listen: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    metric_readers: Sequence[MetricReader] = (),
) -> RunningServer:
    """Build the integrations and the server, bind, and start serving.

    Args:
        config: the validated configuration.
        listen: overrides `server.listen` (`host:port`, port 0 picks a free one, or
            `unix:/path`).
        clock: time source of every resilience policy.
        metric_readers: extra OpenTelemetry readers (tests use an in-memory one).

    Raises:
        ServerStartError: the address cannot be bound.
    """
    # Before anything is built that could log a secret (a connection error, a DSN).
    redacted = redact(part for s in secret_settings(config) for part in (s.value, *s.parts))
    for path in config.inline_secrets:
        _log.warning(
            "a secret is written inline in the config file: use a ${VAR} reference",
            extra={"config_path": path},
        )
    integrations = build_integrations(config, clock)
    meter_provider, metrics, prometheus = _metrics(config, metric_readers, integrations)
    tracing = start_tracing(config, integrations)
    try:
        running = await _start(
            config, listen, clock, integrations, meter_provider, metrics, prometheus, tracing
        )
        running.tracing, running.redacted = tracing, redacted
        return running
    except BaseException:  # nothing started may outlive a failed start (ports, connections)
        if tracing is not None:
            tracing.shutdown()
        if prometheus is not None:
            prometheus.close()
        if meter_provider is not None:
            meter_provider.shutdown()
        await integrations.close()
        forget(redacted)
        raise


async def _start(
    config: Config,
    listen: str | None,
    clock: Clock,
    integrations: Integrations,
    meter_provider: MeterProvider | None,
    metrics: Metrics | None,
    prometheus: PrometheusEndpoint | None,
    tracing: Tracing | None = None,
) -> RunningServer:
    server = grpc.aio.server(
        options=_server_options(config),
        compression=grpc.Compression.Gzip if config.server.compression == "gzip" else None,
    )
    # Everything registered through `registrar` gets the inbound concerns (see InboundLayer).
    inbound = _inbound_layer(config, metrics, clock, tracing)
    registrar: Any = inbound.registrar(server)
    try:
        permissions = Permissions.from_config(config.server)
    except PolicyError as exc:
        raise ServerStartError(f"invalid permissions: {exc}") from exc
    if permissions is not None:  # checked inside the inbound layer, after the token
        registrar = permissions.registrar(registrar)
    types = integrations.types()
    servicers = {
        service.name: service.add(integrations, registrar, config)
        for service in SERVICES
        if service.capability is None or service.capability in types
    }
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    if config.server.reflection:
        enable_reflection((*servicers, HEALTH_SERVICE), registrar)

    address = listen or config.server.listen
    if address.startswith("unix:"):
        _refuse_live_socket(address)
    try:
        port = bind(server, address, config.server)
    except ListenerError as exc:
        raise ServerStartError(str(exc)) from exc
    if not address.startswith("unix:"):
        if port == 0:
            raise ServerStartError(f"cannot listen on {address}: address in use or invalid")
        address = f"{address.rsplit(':', 1)[0]}:{port}"

    health_monitoring = config.integration.health_monitoring
    monitor = HealthMonitor(
        integrations,
        health_servicer,
        {s.capability: s.name for s in SERVICES if s.capability in types and s.capability},
        check_interval=health_monitoring.check_interval,
        timeout=health_monitoring.timeout,
        consecutive_failures=health_monitoring.consecutive_failures,
    )
    await monitor.publish_initial()
    recovery = RecoveryProber(integrations, timeout=health_monitoring.timeout)
    await server.start()
    monitor.start()
    recovery.start()
    _log.info("serving", extra={"address": address, "integrations": len(integrations)})
    return RunningServer(
        server=server,
        address=address,
        config=config,
        integrations=integrations,
        health=health_servicer,
        monitor=monitor,
        recovery=recovery,
        inbound=inbound,
        servicers=servicers,
        meter_provider=meter_provider,
        prometheus=prometheus,
    )


def _refuse_live_socket(address: str) -> None:
    """Raise ServerStartError when a live process answers on the Unix socket `address`.

    gRPC unlinks whatever socket file is at the path and binds its own: a second sidecar
    would silently take the path over from a running one. A file nobody answers on (left by
    a killed process) is stale, and gRPC reuses it. Two sidecars starting at the same
    instant can still both pass this check.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_SOCKET_PROBE_TIMEOUT)
        try:
            probe.connect(address.removeprefix("unix:"))
        except TimeoutError:
            pass  # a live process too busy to accept at once
        except OSError:  # no file, a stale socket (ECONNREFUSED), not a socket: bind decides
            return
    raise ServerStartError(f"cannot listen on {address}: another process is serving there")


async def serve(config: Config, *, listen: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the exit code."""
    running = await start_server(config, listen=listen)
    # Start-up's objects (modules, config models, descriptors) live as long as the process:
    # frozen, a full collection no longer walks them (~67,000 objects, 25-35 ms in which
    # every call in flight stalls).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.stop()
    return 0
