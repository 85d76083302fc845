"""AdmissionReview in, AdmissionReview out: the webhook's whole decision, without HTTP.

The rule that shapes this module: the injector never breaks a pod. Anything it cannot
understand (not a pod, an odd shape, a bad annotation, a name it would clash with) is answered
`allowed` with no patch, a reason in the log and, where a user asked for the sidecar, a warning
`kubectl` prints. Only a body that is not an AdmissionReview at all, where there is no request
uid to answer, is refused (HTTP 400; the webhook's `failurePolicy: Ignore` then admits the pod).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer

from .settings import (
    INJECT,
    STATUS,
    InvalidAnnotation,
    SidecarSettings,
    settings_for,
    wants_injection,
)
from .sidecar import (
    ADDRESS_ENV,
    CONTAINER_NAME,
    SOCKET_DIR,
    VOLUME_NAMES,
    app_address,
    sidecar_container,
    sidecar_volumes,
    socket_mount,
)

__all__ = ["API_VERSION", "Decision", "MalformedReview", "decide", "review"]

API_VERSION = "admission.k8s.io/v1"
_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
Json = dict[str, Any]


class MalformedReview(ValueError):
    """The body is no AdmissionReview v1 request: there is nothing to answer."""


@dataclass(frozen=True)
class Decision:
    """What to do with one pod: a JSONPatch (None: leave it alone), why, and user warnings."""

    patch: list[Json] | None
    reason: str
    warnings: list[str] = field(default_factory=list)


def review(body: object, defaults: SidecarSettings) -> tuple[Json, Decision]:
    """Answer one AdmissionReview; returns the response document and the decision (for logs).

    Raises:
        MalformedReview: not an `admission.k8s.io/v1` AdmissionReview with a request uid.
    """
    if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
        raise MalformedReview("the body is not an AdmissionReview")
    if body.get("apiVersion") != API_VERSION:
        raise MalformedReview(f"apiVersion {body.get('apiVersion')!r} is not {API_VERSION}")
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise MalformedReview("the AdmissionReview has no request uid")
    decision = _decide_request(request, defaults)
    response: Json = {"uid": request["uid"], "allowed": True}
    if decision.patch:
        encoded = json.dumps(decision.patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    if decision.warnings:
        response["warnings"] = decision.warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}, decision


def _decide_request(request: Mapping[str, Any], defaults: SidecarSettings) -> Decision:
    kind = request.get("kind")
    if not isinstance(kind, dict) or (kind.get("group"), kind.get("kind")) != ("", "Pod"):
        return Decision(None, f"not a pod: {kind!r}")
    if request.get("subResource"):
        return Decision(None, f"subresource {request.get('subResource')!r}")
    if request.get("operation") != "CREATE":
        return Decision(None, f"operation {request.get('operation')!r} is not CREATE")
    return decide(request.get("object"), defaults)


def decide(pod: object, defaults: SidecarSettings) -> Decision:
    """The patch that adds the sidecar to `pod`, or why there is none."""
    problem = _shape_problem(pod)
    if problem is not None:
        return Decision(None, f"unexpected pod shape: {problem}")
    assert isinstance(pod, dict)  # checked by _shape_problem
    annotations: Mapping[str, str] = pod.get("metadata", {}).get("annotations") or {}
    if not wants_injection(annotations):
        return Decision(None, f'no {INJECT}: "true" annotation')
    spec = pod["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    if STATUS in annotations or any(c["name"] == CONTAINER_NAME for c in containers):
        return Decision(None, "already injected")
    try:
        settings = settings_for(defaults, annotations)
    except InvalidAnnotation as exc:
        return _refused(str(exc))
    volumes = {v.get("name") for v in spec.get("volumes", [])}
    clash = sorted(volumes.intersection(VOLUME_NAMES))
    if clash:
        return _refused(f"the pod already has a volume named {clash[0]}")
    if not settings.unix_socket and spec.get("hostNetwork") is True:
        # The port would be the node's: shared by every such pod there, open to the network.
        return _refused('the pod uses hostNetwork; use integration-sidecar.io/unix-socket: "true"')
    if not settings.unix_socket:
        for container in containers:
            for port in container.get("ports", []):
                if port.get("containerPort") == settings.port:
                    return _refused(
                        f"container {container['name']} already uses port {settings.port}; "
                        "choose another with integration-sidecar.io/port"
                    )
    patch = _patch(pod, settings)
    try:  # A bug here must cost the pod its sidecar, never the pod itself.
        jsonpatch.JsonPatch(patch).apply(pod)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        return Decision(None, f"bug: the patch does not apply: {exc}")
    return Decision(patch, f"injected ({settings.mode})")


def _refused(why: str) -> Decision:
    return Decision(None, why, [f"integration-sidecar not injected: {why}"])


def _patch(pod: Json, settings: SidecarSettings) -> list[Json]:
    """The operations, written out rather than diffed: one `add` per thing injected reads
    plainly in the API server's audit log (a diff would morph the pod's first container)."""
    ops: list[Json] = []
    annotations = {STATUS: "injected"}
    spec = pod["spec"]
    if settings.mode == "native":
        # First, so the pod's own init containers can already use it.
        apps = [
            *(f"/spec/initContainers/{i + 1}" for i in range(len(spec.get("initContainers", [])))),
            *(f"/spec/containers/{i}" for i in range(len(spec["containers"]))),
        ]
        app_objects = [*spec.get("initContainers", []), *spec["containers"]]
        ops.append(_add_first(spec, "/spec", "initContainers", sidecar_container(settings)))
    else:
        apps = [f"/spec/containers/{i + 1}" for i in range(len(spec["containers"]))]
        app_objects = list(spec["containers"])
        annotations[_DEFAULT_CONTAINER] = spec["containers"][0]["name"]
        ops.append(_add_first(spec, "/spec", "containers", sidecar_container(settings)))
    existing = pod["metadata"]["annotations"]  # holds the inject annotation
    for key, value in annotations.items():
        if key not in existing:
            path = "/metadata/annotations/" + jsonpointer.escape(key)
            ops.insert(0, {"op": "add", "path": path, "value": value})
    ops += _add_last(spec, "/spec", "volumes", sidecar_volumes(settings))
    for path, app in zip(apps, app_objects, strict=True):
        if not any(item.get("name") == ADDRESS_ENV for item in app.get("env", [])):
            item = {"name": ADDRESS_ENV, "value": app_address(settings)}
            ops += _add_last(app, path, "env", [item])
        mounts = app.get("volumeMounts", [])
        if settings.unix_socket and not any(m.get("mountPath") == SOCKET_DIR for m in mounts):
            ops += _add_last(app, path, "volumeMounts", [socket_mount()])
    return ops


def _add_first(parent: Json, path: str, key: str, value: Json) -> Json:
    if parent.get(key):
        return {"op": "add", "path": f"{path}/{key}/0", "value": value}
    return {"op": "add", "path": f"{path}/{key}", "value": [value]}


def _add_last(parent: Json, path: str, key: str, values: list[Json]) -> list[Json]:
    """Append to a list, creating it when the pod has none."""
    if parent.get(key):
        return [{"op": "add", "path": f"{path}/{key}/-", "value": value} for value in values]
    return [{"op": "add", "path": f"{path}/{key}", "value": values}]


def _shape_problem(pod: object) -> str | None:
    """What makes `pod` something the injector will not touch (None: it is a usable pod)."""
    if not isinstance(pod, dict):
        return "the object is not a mapping"
    metadata = pod.get("metadata", {})
    if not isinstance(metadata, dict):
        return "metadata is not a mapping"
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        return "metadata.annotations is not a map of strings"
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return "spec is not a mapping"
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return "spec.containers is not a non-empty list"
    for key in ("initContainers", "volumes"):
        if not isinstance(spec.get(key, []), list):
            return f"spec.{key} is not a list"
    for container in [*spec.get("initContainers", []), *containers]:
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            return "a container is not a mapping with a name"
        for key in ("env", "ports", "volumeMounts"):
            items = container.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                return f"container {container['name']}: {key} is not a list of mappings"
    if not all(isinstance(v, dict) for v in spec.get("volumes", [])):
        return "spec.volumes is not a list of mappings"
    return None
