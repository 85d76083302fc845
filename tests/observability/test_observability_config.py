"""The README's observability example loads as written, and means what it says."""

from __future__ import annotations

from sidecar.config import parse_config

# The README's "Observability" example (keep the two equal).
README_EXAMPLE = """
server:
  log_level: info            # debug | info | warning | error (the sidecar's own lines)
  access_log: true           # one JSON line per RPC
integration:
  health_monitoring:
    check_interval: 10s
    timeout: 2s
    consecutive_failures: 3
  metrics:
    prometheus_listen: 127.0.0.1:9464      # GET /metrics
    export_interval: 15s                   # how often metrics are pushed to otlp
    otlp:
      endpoint: http://otel-collector:4317
  tracing:
    sampling_ratio: 0.05                   # of traces the sidecar starts
    service_name: checkout-sidecar
    export_delay: 2s
    otlp:
      endpoint: http://otel-collector:4318
      protocol: http/protobuf
      timeout: 10s
"""


def test_the_readme_example_loads() -> None:
    config = parse_config(README_EXAMPLE, environ={})
    tracing = config.integration.tracing
    assert tracing is not None
    assert (tracing.sampling_ratio, tracing.otlp.protocol) == (0.05, "http/protobuf")
    assert tracing.otlp.endpoint == "http://otel-collector:4318"
    metrics = config.integration.metrics
    assert metrics.otlp is not None and metrics.otlp.protocol == "grpc"
    assert metrics.export_interval == 15.0


def test_no_tracing_block_means_no_tracing() -> None:
    assert parse_config("", environ={}).integration.tracing is None
