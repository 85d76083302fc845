"""The live integrations built from configuration: backends, their pipelines and health."""

from sidecar.runtime.classify import classify
from sidecar.runtime.integrations import Integration, Integrations, build_integrations

__all__ = ["Integration", "Integrations", "build_integrations", "classify"]
