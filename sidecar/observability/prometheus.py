"""The `/metrics` endpoint: the OpenTelemetry SDK's metrics through its Prometheus reader,
plus collectors of our own (request durations), on one loopback HTTP listener."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader

__all__ = ["PrometheusEndpoint"]


class PrometheusEndpoint:
    """Serve `/metrics` on `listen` (`host:port`) until `close()`."""

    def __init__(self, listen: str) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import REGISTRY, start_http_server

        self._registry = REGISTRY
        self.reader: MetricReader = PrometheusMetricReader()
        host, _, port = listen.rpartition(":")
        self._httpd, _ = start_http_server(int(port), addr=host.strip("[]"))
        self._collectors: list[Any] = []

    def add_collector(self, collector: Any) -> None:
        """Expose `collector` (a `prometheus_client` collector) on the endpoint too."""
        self._registry.register(collector)
        self._collectors.append(collector)

    def close(self) -> None:
        """Stop listening and drop our collectors (the SDK reader goes with its provider)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for collector in self._collectors:
            self._registry.unregister(collector)
        self._collectors.clear()
