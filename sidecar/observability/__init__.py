"""Metrics, logging and per-call context shared by the interceptors and servicers."""

from sidecar.observability.call_context import CallInfo, current_call
from sidecar.observability.logging import configure_logging
from sidecar.observability.metrics import Metrics

__all__ = ["CallInfo", "Metrics", "configure_logging", "current_call"]
