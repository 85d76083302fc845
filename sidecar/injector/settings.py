"""What to inject: the injector's defaults, overridden per pod by `integration-sidecar.io/*`
annotations.

Every annotation value is checked here, before anything is built: a pod whose annotations make
no sense is admitted untouched (with a warning the user sees in `kubectl`), never rejected and
never given a half-built sidecar.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANNOTATIONS",
    "ANNOTATION_PREFIX",
    "INJECT",
    "SIDECAR_UID",
    "STATUS",
    "InjectorDefaults",
    "InvalidAnnotation",
    "Resources",
    "SidecarSettings",
    "settings_for",
    "wants_injection",
]

ANNOTATION_PREFIX = "integration-sidecar.io/"
INJECT = ANNOTATION_PREFIX + "inject"
"""`"true"` asks for the sidecar; anything else (or no annotation) leaves the pod alone."""
STATUS = ANNOTATION_PREFIX + "status"
"""Set to `injected` on every pod the injector changed: the idempotency mark, and a trace."""

SIDECAR_UID = 10001
"""The fixed non-root UID (and GID) of the image's user; the Dockerfile creates it."""

Mode = Literal["native", "container"]
Probes = Literal["grpc", "exec", "none"]
LogLevel = Literal["debug", "info", "warning", "error"]

ANNOTATIONS: Mapping[str, str] = {
    INJECT: '"true" to inject the sidecar',
    ANNOTATION_PREFIX + "mode": "native (an init container with restartPolicy Always, "
    "Kubernetes 1.29+) or container (a regular container with a preStop drain, older clusters)",
    ANNOTATION_PREFIX + "config-map": "ConfigMap (in the pod's namespace) whose config.yaml "
    "the sidecar loads; none: the embedded defaults",
    ANNOTATION_PREFIX + "secret": "Secret whose keys become the sidecar's environment "
    "(for ${VAR} references in the config)",
    ANNOTATION_PREFIX + "port": "TCP port the sidecar listens on (1-65535)",
    ANNOTATION_PREFIX + "unix-socket": '"true": listen on a Unix socket in a shared emptyDir '
    "instead of a TCP port",
    ANNOTATION_PREFIX + "probes": "grpc (kubelet's gRPC probes, Kubernetes 1.24+; the sidecar "
    "then listens on all interfaces), exec (the image's probe command; the sidecar listens on "
    "127.0.0.1 only) or none; a Unix socket always uses exec",
    ANNOTATION_PREFIX + "log-level": "debug, info, warning or error",
    ANNOTATION_PREFIX + "image": "sidecar image reference",
    ANNOTATION_PREFIX + "cpu-request": "CPU request (Kubernetes quantity)",
    ANNOTATION_PREFIX + "cpu-limit": "CPU limit (Kubernetes quantity)",
    ANNOTATION_PREFIX + "memory-request": "memory request (Kubernetes quantity)",
    ANNOTATION_PREFIX + "memory-limit": "memory limit (Kubernetes quantity)",
    ANNOTATION_PREFIX + "drain-seconds": "container mode: seconds the preStop hook waits so "
    "the app stops before the sidecar (0-300)",
}
"""Every annotation the injector reads, with what it means (the README's table)."""

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}")
_MAX_DRAIN_SECONDS = 300
_MAX_PORT = 65535


class InvalidAnnotation(ValueError):
    """An annotation value the injector cannot use; the message names the annotation."""


@dataclass(frozen=True)
class Resources:
    """The sidecar container's requests and limits (None: not set)."""

    cpu_request: str | None = "50m"
    cpu_limit: str | None = None
    memory_request: str | None = "64Mi"
    memory_limit: str | None = "256Mi"

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        """The `resources` field of a container."""
        result: dict[str, dict[str, str]] = {}
        for kind, cpu, memory in (
            ("requests", self.cpu_request, self.memory_request),
            ("limits", self.cpu_limit, self.memory_limit),
        ):
            values = {name: v for name, v in (("cpu", cpu), ("memory", memory)) if v is not None}
            if values:
                result[kind] = values
        return result


@dataclass(frozen=True)
class SidecarSettings:
    """Everything that varies between injected sidecars."""

    image: str
    mode: Mode = "native"
    port: int = 50051
    unix_socket: bool = False
    probes: Probes = "grpc"
    config_map: str | None = None
    secret: str | None = None
    log_level: LogLevel | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    drain_seconds: int = 5


InjectorDefaults = SidecarSettings
"""The injector's command line gives the defaults in the same shape a pod's annotations
override."""


def wants_injection(annotations: Mapping[str, str]) -> bool:
    """Whether the pod asks for the sidecar."""
    return annotations.get(INJECT, "").strip().lower() == "true"


def settings_for(defaults: SidecarSettings, annotations: Mapping[str, str]) -> SidecarSettings:
    """The defaults with the pod's annotations applied.

    Raises:
        InvalidAnnotation: a value is malformed or out of bounds (the pod is then left alone).
    """
    changes: dict[str, object] = {}
    resources: dict[str, str] = {}
    for key, raw in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX) or key in (INJECT, STATUS):
            continue
        name = key.removeprefix(ANNOTATION_PREFIX)
        value = raw.strip()
        if key not in ANNOTATIONS:
            raise InvalidAnnotation(f"unknown annotation {key} (known: {', '.join(ANNOTATIONS)})")
        if name == "mode":
            changes["mode"] = _choice(key, value, ("native", "container"))
        elif name == "probes":
            changes["probes"] = _choice(key, value, ("grpc", "exec", "none"))
        elif name == "log-level":
            changes["log_level"] = _choice(key, value, ("debug", "info", "warning", "error"))
        elif name == "port":
            changes["port"] = _integer(key, value, 1, _MAX_PORT)
        elif name == "drain-seconds":
            changes["drain_seconds"] = _integer(key, value, 0, _MAX_DRAIN_SECONDS)
        elif name == "unix-socket":
            changes["unix_socket"] = _choice(key, value.lower(), ("true", "false")) == "true"
        elif name in ("config-map", "secret"):
            changes[name.replace("-", "_")] = _dns_name(key, value)
        elif name == "image":
            if _IMAGE.fullmatch(value) is None:
                raise InvalidAnnotation(f"{key}: {raw!r} is not an image reference")
            changes["image"] = value
        else:  # cpu-request, cpu-limit, memory-request, memory-limit
            if _QUANTITY.fullmatch(value) is None:
                raise InvalidAnnotation(f"{key}: {raw!r} is not a quantity like 100m or 128Mi")
            resources[name.replace("-", "_")] = value
    if resources:
        changes["resources"] = dataclasses.replace(defaults.resources, **resources)
    return dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]


def _choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidAnnotation(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _integer(key: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidAnnotation(f"{key}: {value!r} is not a whole number from {low} to {high}")
    return int(value)


def _dns_name(key: str, value: str) -> str:
    if _DNS_SUBDOMAIN.fullmatch(value) is None:
        raise InvalidAnnotation(f"{key}: {value!r} is not a Kubernetes object name")
    return value
