"""Where traces and metrics are pushed: `integration.tracing` and `integration.metrics.otlp`.

    integration:
      tracing:
        sampling_ratio: 0.1             # of the traces the sidecar starts; a caller's
                                        # sampled flag wins (ParentBased)
        otlp:
          endpoint: http://otel-collector:4317
          protocol: grpc                # or http/protobuf (port 4318, path /v1/traces)
      metrics:
        export_interval: 15s
        otlp:
          endpoint: http://otel-collector:4317

No `tracing:` block (the default) means no tracer provider at all: no span is made, and a
call costs nothing for traces.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ._common import ConfigModel, Fraction
from ._units import DurationSeconds

__all__ = ["OtlpConfig", "TracingConfig"]


class OtlpConfig(ConfigModel):
    """An OpenTelemetry collector (or any OTLP receiver) to push to."""

    endpoint: str = Field(
        description="URL of the receiver: http://host:4317 for gRPC, http://host:4318 for "
        "HTTP (the signal's path, /v1/traces or /v1/metrics, is added); https:// uses TLS "
        "with the system's CA bundle."
    )
    protocol: Literal["grpc", "http/protobuf"] = Field(
        default="grpc", description="OTLP transport. Default grpc."
    )
    timeout: DurationSeconds = Field(
        default=10.0, description="Limit on one export request. Default 10s."
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")


class TracingConfig(ConfigModel):
    """OpenTelemetry traces: a server span per RPC, a client span per upstream attempt."""

    enabled: bool = Field(default=True, description="Record spans. Default true.")
    sampling_ratio: Fraction = Field(
        default=1.0,
        description="Share of new traces recorded (TraceIdRatio); a caller's traceparent "
        "decides for its own trace (ParentBased). Default 1.0.",
    )
    otlp: OtlpConfig = Field(description="Where spans are exported.")
    service_name: str = Field(
        default="integration-sidecar",
        min_length=1,
        max_length=256,
        description="The `service.name` resource attribute of every span.",
    )
    export_delay: DurationSeconds = Field(
        default=2.0,
        description="Longest a finished span waits before its batch is exported. Default 2s.",
    )
