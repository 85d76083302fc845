"""Connect the live integrations to traces and metrics: each pipeline's attempts become
client spans, and the metrics read the integrations' health, pools and message counts.

    tracing = start_tracing(config, integrations)        # None: tracing is off
    watch_integrations(metrics, integrations)
    reader = otlp_metric_reader(config.integration.metrics)  # None: nothing is pushed
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.config import Config
from sidecar.config.observability import OtlpConfig
from sidecar.config.policies import MetricsConfig
from sidecar.observability.metrics import Metrics
from sidecar.observability.tracing import Tracing, attempt_attributes
from sidecar.runtime.integrations import Integrations

__all__ = ["otlp_metric_reader", "start_tracing", "watch_integrations"]


def start_tracing(config: Config, integrations: Integrations) -> Tracing | None:
    """The tracer of `integration.tracing`, installed, with every integration's pipeline
    making a client span per attempt; None (and nothing made) when tracing is off."""
    settings = config.integration.tracing
    if settings is None or not settings.enabled:
        return None
    tracing = Tracing(
        _span_exporter(settings.otlp),
        sampling_ratio=settings.sampling_ratio,
        service_name=settings.service_name,
        export_delay=settings.export_delay,
    )
    tracing.install()
    for item in integrations:
        if item.pipeline is None:  # AI services: their HTTP requests are the spans
            continue
        attributes, operation_key = attempt_attributes(item.type, item.backend_name, item.name)
        item.pipeline.wrap_attempts(
            tracing.attempt_wrapper(
                str(attributes.get("db.system") or attributes.get("messaging.system") or item.name),
                attributes,
                operation_key,
            )
        )
    return tracing


def watch_integrations(metrics: Metrics, integrations: Integrations) -> None:
    """Have `metrics` read the integrations' health, pools and pub/sub counts."""

    def health() -> Iterator[tuple[str, bool]]:
        for item in integrations:
            yield item.name, item.healthy

    def pools() -> Iterator[tuple[str, tuple[int, int] | None]]:
        for name, entry in integrations.connections:
            usage: Any = getattr(entry.connection, "pool_usage", None)
            if usage is not None:
                yield name, usage()

    def dead_letters() -> Iterator[tuple[str, str, int]]:
        for item in integrations:
            total: Any = getattr(item.backend, "dead_lettered_total", None)
            if item.type == "pubsub" and total is not None:
                yield item.name, "dead_lettered", total()

    integrations.messages.add_source(dead_letters)
    metrics.watch(health, pools, integrations.messages)


def otlp_metric_reader(settings: MetricsConfig) -> MetricReader | None:
    """A reader pushing every metric to `settings.otlp` each `export_interval`, or None."""
    if settings.otlp is None:
        return None
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return PeriodicExportingMetricReader(
        _metric_exporter(settings.otlp), export_interval_millis=settings.export_interval * 1000
    )


def _metric_exporter(otlp: OtlpConfig) -> Any:
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=otlp.endpoint,
            insecure=otlp.endpoint.startswith("http://"),
            timeout=int(otlp.timeout),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=f"{otlp.endpoint}/v1/metrics", timeout=int(otlp.timeout))


def _span_exporter(otlp: OtlpConfig) -> Any:
    if otlp.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=otlp.endpoint,
            insecure=otlp.endpoint.startswith("http://"),
            timeout=int(otlp.timeout),
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces", timeout=int(otlp.timeout))
