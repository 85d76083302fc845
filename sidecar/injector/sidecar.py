"""The injected pieces as Kubernetes JSON: the sidecar container, its volumes, and what the
app containers gain (where the sidecar listens, and the socket directory in Unix-socket mode).

Pure functions of `SidecarSettings`, so the tests and the Helm chart's hand-include template can
be checked against the very same output.
"""

from __future__ import annotations

from typing import Any

from .settings import SIDECAR_UID, SidecarSettings

__all__ = [
    "ADDRESS_ENV",
    "CONFIG_DIR",
    "CONTAINER_NAME",
    "LOG_LEVEL_ENV",
    "SOCKET_DIR",
    "VOLUME_NAMES",
    "app_address",
    "sidecar_container",
    "sidecar_volumes",
    "socket_mount",
]

Json = dict[str, Any]

CONTAINER_NAME = "integration-sidecar"
ADDRESS_ENV = "INTEGRATION_SIDECAR_ADDRESS"
"""Set on every app container: `127.0.0.1:PORT` or `unix:/run/integration-sidecar/...`."""
LOG_LEVEL_ENV = "INTEGRATION_SIDECAR_LOG_LEVEL"
"""Set on the sidecar by the log-level annotation; the chart's config reads it with
`log_level: ${INTEGRATION_SIDECAR_LOG_LEVEL:-info}`."""

CONFIG_DIR = "/etc/integration-sidecar"
SOCKET_DIR = "/run/integration-sidecar"
_SOCKET = f"{SOCKET_DIR}/sidecar.sock"
_CONFIG_VOLUME = "integration-sidecar-config"
_TMP_VOLUME = "integration-sidecar-tmp"
_SOCKET_VOLUME = "integration-sidecar-socket"
VOLUME_NAMES = (_CONFIG_VOLUME, _TMP_VOLUME, _SOCKET_VOLUME)
_TMP_SIZE = "64Mi"


def app_address(settings: SidecarSettings) -> str:
    """Where the app reaches the sidecar (the pod shares one network namespace)."""
    return f"unix:{_SOCKET}" if settings.unix_socket else f"127.0.0.1:{settings.port}"


def sidecar_volumes(settings: SidecarSettings) -> list[Json]:
    """The pod volumes the sidecar needs: /tmp (read-only root), config, socket directory."""
    volumes: list[Json] = [{"name": _TMP_VOLUME, "emptyDir": {"sizeLimit": _TMP_SIZE}}]
    if settings.config_map is not None:
        volumes.append({"name": _CONFIG_VOLUME, "configMap": {"name": settings.config_map}})
    if settings.unix_socket:
        volumes.append({"name": _SOCKET_VOLUME, "emptyDir": {}})
    return volumes


def socket_mount() -> Json:
    """The socket directory's mount, for the sidecar and every app container."""
    return {"name": _SOCKET_VOLUME, "mountPath": SOCKET_DIR}


def sidecar_container(settings: SidecarSettings) -> Json:
    """The sidecar container: native (an init container that keeps running) or regular."""
    listen = f"unix:{_SOCKET}" if settings.unix_socket else f"{_host(settings)}:{settings.port}"
    args = ["serve", "--listen", listen]
    mounts: list[Json] = [{"name": _TMP_VOLUME, "mountPath": "/tmp"}]
    if settings.config_map is not None:
        args += ["--config", f"{CONFIG_DIR}/config.yaml"]
        mounts.append({"name": _CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})
    if settings.unix_socket:
        mounts.append(socket_mount())
    container: Json = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
    }
    if settings.log_level is not None:
        container["env"] = [{"name": LOG_LEVEL_ENV, "value": settings.log_level}]
    if settings.secret is not None:
        container["envFrom"] = [{"secretRef": {"name": settings.secret}}]
    if not settings.unix_socket:
        container["ports"] = [{"containerPort": settings.port, "protocol": "TCP"}]
    if settings.probes != "none":
        container.update(_probes(settings))
    resources = settings.resources.as_kubernetes()
    if resources:
        container["resources"] = resources
    container["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": SIDECAR_UID,
        "runAsGroup": SIDECAR_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container["volumeMounts"] = mounts
    if settings.mode == "native":
        container["restartPolicy"] = "Always"
    elif settings.drain_seconds > 0:
        # Every container of a terminating pod gets SIGTERM at once: the sidecar waits so the
        # app can finish its last calls through it.
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(settings.drain_seconds)]}}
        }
    return container


def _host(settings: SidecarSettings) -> str:
    """kubelet's gRPC probes dial the pod IP, so then the sidecar listens on every interface;
    otherwise on loopback only, where nothing outside the pod reaches it."""
    return "0.0.0.0" if settings.probes == "grpc" else "127.0.0.1"


def _probes(settings: SidecarSettings) -> Json:
    """Startup, readiness and liveness probes on the gRPC health service ("": the process).

    kubelet's gRPC probes dial TCP only; on a Unix socket, or where gRPC probes are not
    available (before Kubernetes 1.24), the image's own probe module checks it.
    """
    if settings.unix_socket or settings.probes == "exec":
        address = app_address(settings)
        check: Json = {
            "exec": {"command": ["python", "-m", "sidecar.injector.probe", address]},
            "timeoutSeconds": 3,
        }
        start_period, period = 2, 10  # each exec probe starts a Python process
    else:
        check = {"grpc": {"port": settings.port}, "timeoutSeconds": 1}
        start_period, period = 1, 5
    return {
        "startupProbe": {**check, "periodSeconds": start_period, "failureThreshold": 30},
        "readinessProbe": {**check, "periodSeconds": period, "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": period * 2, "failureThreshold": 3},
    }
