"""The injector's decisions on AdmissionReview documents: every patch, applied with jsonpatch,
gives a pod valid in Kubernetes 1.29 and the newest schema, carrying the expected sidecar."""

from __future__ import annotations

import argparse
import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from sidecar.cli import _parser
from sidecar.injector.cli import sidecar_defaults
from sidecar.injector.mutate import MalformedReview, review
from sidecar.injector.settings import (
    ANNOTATIONS,
    SIDECAR_UID,
    InvalidAnnotation,
    SidecarSettings,
)

DEFAULTS = SidecarSettings(image="registry.example/integration-sidecar:0.1.0")
INJECT = {"integration-sidecar.io/inject": "true"}


def make_pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop", "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "app", "image": "shop:1"}], **spec},
    }
    if annotations is None:
        del pod["metadata"]["annotations"]
    return pod


def make_review(pod: object, operation: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
            "namespace": "shop",
            "operation": operation,
            "object": pod,
        },
    }


def admit(pod: object, defaults: SidecarSettings = DEFAULTS, **options: str) -> dict[str, Any]:
    answer, _ = review(make_review(pod, **options), defaults)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["allowed"] is True
    return response


def injected(pod: dict[str, Any], validate: Any, **options: Any) -> dict[str, Any]:
    """Admit `pod`, apply the patch, check the result is a valid pod, and return it."""
    response = admit(pod, **options)
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    validate(result)
    assert result["metadata"]["annotations"]["integration-sidecar.io/status"] == "injected"
    return result


def sidecar_of(pod: dict[str, Any]) -> dict[str, Any]:
    found = [
        c
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
        if c["name"] == "integration-sidecar"
    ]
    assert len(found) == 1
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_a_plain_pod_gets_a_native_sidecar_with_probes_and_a_locked_down_context(
    validate: Any,
) -> None:
    pod = injected(make_pod(INJECT), validate)
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == "integration-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == DEFAULTS.image
    assert sidecar["args"] == ["serve", "--listen", "0.0.0.0:50051"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["grpc"] == {"port": 50051}
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": SIDECAR_UID,
        "runAsGroup": SIDECAR_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert {"name": "integration-sidecar-tmp", "mountPath": "/tmp"} in sidecar["volumeMounts"]
    assert pod["spec"]["volumes"] == [
        {"name": "integration-sidecar-tmp", "emptyDir": {"sizeLimit": "64Mi"}}
    ]
    assert env_of(pod["spec"]["containers"][0]) == {
        "INTEGRATION_SIDECAR_ADDRESS": "127.0.0.1:50051"
    }
    assert pod["spec"]["containers"][0]["name"] == "app"


def test_a_pod_without_annotations_or_not_asking_is_left_alone() -> None:
    for pod in (make_pod(None), make_pod({"integration-sidecar.io/inject": "false"})):
        response = admit(pod)
        assert "patch" not in response
        assert "warnings" not in response


def test_the_sidecar_comes_before_the_pods_own_init_containers_which_can_use_it(
    validate: Any,
) -> None:
    migrate = {"name": "migrate", "image": "shop:1", "env": [{"name": "A", "value": "1"}]}
    pod = injected(make_pod(INJECT, initContainers=[migrate]), validate)
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["integration-sidecar", "migrate"]
    assert env_of(pod["spec"]["initContainers"][1]) == {
        "A": "1",
        "INTEGRATION_SIDECAR_ADDRESS": "127.0.0.1:50051",
    }


def test_container_mode_adds_a_regular_container_with_a_prestop_drain(validate: Any) -> None:
    annotations = {**INJECT, "integration-sidecar.io/mode": "container"}
    migrate = {"name": "migrate", "image": "shop:1"}
    pod = injected(make_pod(annotations, initContainers=[migrate]), validate)
    sidecar = pod["spec"]["containers"][0]
    assert sidecar["name"] == "integration-sidecar"
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert pod["spec"]["initContainers"] == [migrate]  # they run before the sidecar does
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    assert env_of(pod["spec"]["containers"][1])["INTEGRATION_SIDECAR_ADDRESS"] == (
        "127.0.0.1:50051"
    )


def test_every_annotation_override_is_applied(validate: Any) -> None:
    annotations = {
        **INJECT,
        "integration-sidecar.io/port": "6000",
        "integration-sidecar.io/config-map": "shop-sidecar",
        "integration-sidecar.io/secret": "shop-sidecar-secrets",
        "integration-sidecar.io/log-level": "debug",
        "integration-sidecar.io/image": "mirror.local/sidecar@sha256:" + "a" * 64,
        "integration-sidecar.io/cpu-request": "100m",
        "integration-sidecar.io/cpu-limit": "1",
        "integration-sidecar.io/memory-request": "128Mi",
        "integration-sidecar.io/memory-limit": "1Gi",
        "integration-sidecar.io/mode": "container",
        "integration-sidecar.io/drain-seconds": "20",
    }
    pod = injected(make_pod(annotations), validate)
    sidecar = sidecar_of(pod)
    assert sidecar["image"] == annotations["integration-sidecar.io/image"]
    assert sidecar["args"] == [
        "serve",
        "--listen",
        "0.0.0.0:6000",
        "--config",
        "/etc/integration-sidecar/config.yaml",
    ]
    assert sidecar["livenessProbe"]["grpc"] == {"port": 6000}
    assert sidecar["ports"] == [{"containerPort": 6000, "protocol": "TCP"}]
    assert env_of(sidecar) == {"INTEGRATION_SIDECAR_LOG_LEVEL": "debug"}
    assert sidecar["envFrom"] == [{"secretRef": {"name": "shop-sidecar-secrets"}}]
    assert sidecar["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert {
        "name": "integration-sidecar-config",
        "configMap": {"name": "shop-sidecar"},
    } in pod["spec"]["volumes"]
    app = pod["spec"]["containers"][1]
    assert env_of(app) == {"INTEGRATION_SIDECAR_ADDRESS": "127.0.0.1:6000"}


def test_unix_socket_mode_shares_a_socket_directory_and_probes_by_exec(validate: Any) -> None:
    annotations = {**INJECT, "integration-sidecar.io/unix-socket": "true"}
    pod = injected(make_pod(annotations), validate)
    sidecar = sidecar_of(pod)
    socket = "unix:/run/integration-sidecar/sidecar.sock"
    assert sidecar["args"] == ["serve", "--listen", socket]
    assert "ports" not in sidecar
    assert sidecar["startupProbe"]["exec"]["command"] == [
        "python",
        "-m",
        "sidecar.injector.probe",
        socket,
    ]
    mount = {"name": "integration-sidecar-socket", "mountPath": "/run/integration-sidecar"}
    app = pod["spec"]["containers"][0]
    assert mount in sidecar["volumeMounts"]
    assert app["volumeMounts"] == [mount]
    assert env_of(app) == {"INTEGRATION_SIDECAR_ADDRESS": socket}


def test_an_address_the_app_sets_itself_is_kept(validate: Any) -> None:
    app = {
        "name": "app",
        "image": "shop:1",
        "env": [{"name": "INTEGRATION_SIDECAR_ADDRESS", "value": "localhost:50051"}],
    }
    pod = injected(make_pod(INJECT, containers=[app]), validate)
    assert pod["spec"]["containers"][0]["env"] == app["env"]


def test_injection_is_idempotent(validate: Any) -> None:
    once = injected(make_pod(INJECT), validate)
    response = admit(once)
    assert "patch" not in response
    assert "warnings" not in response
    # A sidecar added by hand (the chart's template) counts as injected too.
    by_hand = make_pod(INJECT)
    by_hand["spec"]["containers"].append({"name": "integration-sidecar", "image": "x"})
    assert "patch" not in admit(by_hand)


def test_a_pod_created_with_generate_name_and_no_annotations_map_is_patched(
    validate: Any,
) -> None:
    pod = make_pod(INJECT)
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "app-"
    result = injected(pod, validate)
    assert result["metadata"]["generateName"] == "app-"


def test_injector_defaults_apply_and_annotations_override_them(validate: Any) -> None:
    defaults = SidecarSettings(
        image="registry.example/sidecar:2", mode="container", config_map="team-sidecar"
    )
    pod = injected(make_pod(INJECT), validate, defaults=defaults)
    assert pod["spec"]["containers"][0]["name"] == "integration-sidecar"
    assert {"name": "integration-sidecar-config", "configMap": {"name": "team-sidecar"}} in (
        pod["spec"]["volumes"]
    )
    native = injected(
        make_pod({**INJECT, "integration-sidecar.io/mode": "native"}), validate, defaults=defaults
    )
    assert native["spec"]["initContainers"][0]["restartPolicy"] == "Always"


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("port", "http", "integration-sidecar.io/port"),
        ("port", "70000", "from 1 to 65535"),
        ("mode", "sidecar", "not one of native, container"),
        ("log-level", "trace", "integration-sidecar.io/log-level"),
        ("config-map", "Bad_Name", "not a Kubernetes object name"),
        ("secret", "", "not a Kubernetes object name"),
        ("memory-limit", "lots", "not a quantity"),
        ("image", "has space:1", "not an image reference"),
        ("drain-seconds", "301", "from 0 to 300"),
        ("unix-socket", "yes", "not one of true, false"),
        ("probes", "http", "not one of grpc, exec, none"),
        ("sockets", "true", "unknown annotation integration-sidecar.io/sockets"),
    ],
)
def test_a_bad_annotation_admits_the_pod_untouched_with_a_warning(
    annotation: str, value: str, message: str
) -> None:
    pod = make_pod({**INJECT, f"integration-sidecar.io/{annotation}": value})
    response = admit(pod)
    assert "patch" not in response
    assert len(response["warnings"]) == 1
    assert message in response["warnings"][0]


def test_name_clashes_admit_the_pod_untouched_with_a_warning() -> None:
    port_taken = make_pod(
        INJECT, containers=[{"name": "app", "image": "x", "ports": [{"containerPort": 50051}]}]
    )
    assert "already uses port 50051" in admit(port_taken)["warnings"][0]
    volume_taken = make_pod(INJECT, volumes=[{"name": "integration-sidecar-tmp", "emptyDir": {}}])
    assert "volume named integration-sidecar-tmp" in admit(volume_taken)["warnings"][0]


def test_a_host_network_pod_gets_the_sidecar_only_on_a_unix_socket(validate: Any) -> None:
    assert "hostNetwork" in admit(make_pod(INJECT, hostNetwork=True))["warnings"][0]
    annotations = {**INJECT, "integration-sidecar.io/unix-socket": "true"}
    pod = injected(make_pod(annotations, hostNetwork=True), validate)
    assert sidecar_of(pod)["args"][-1] == "unix:/run/integration-sidecar/sidecar.sock"


@pytest.mark.parametrize(
    "pod",
    [
        "a pod",
        {"metadata": [], "spec": {}},
        {"metadata": {"annotations": {"integration-sidecar.io/inject": True}}, "spec": {}},
        {"metadata": {"annotations": INJECT}, "spec": {"containers": []}},
        {"metadata": {"annotations": INJECT}, "spec": {"containers": "app"}},
        {"metadata": {"annotations": INJECT}, "spec": {"containers": [{"image": "no name"}]}},
        {
            "metadata": {"annotations": INJECT},
            "spec": {"containers": [{"name": "a"}], "volumes": {}},
        },
        {
            "metadata": {"annotations": INJECT},
            "spec": {"containers": [{"name": "a", "env": {"A": "1"}}]},
        },
        None,
    ],
)
def test_a_pod_it_cannot_understand_is_admitted_untouched(pod: object) -> None:
    answer, decision = review(make_review(pod), DEFAULTS)
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    assert "unexpected pod shape" in decision.reason


def test_other_kinds_operations_and_subresources_are_admitted_untouched() -> None:
    assert "patch" not in admit(make_pod(INJECT), operation="UPDATE")
    assert "patch" not in admit(make_pod(INJECT), kind="Deployment")
    document = make_review(make_pod(INJECT))
    document["request"]["subResource"] = "ephemeralcontainers"
    answer, decision = review(document, DEFAULTS)
    assert "patch" not in answer["response"]
    assert "subresource" in decision.reason


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}},
        {"kind": "Pod", "apiVersion": "admission.k8s.io/v1"},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"},
        {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 7}},
    ],
)
def test_a_body_that_is_no_admission_review_is_refused(document: object) -> None:
    with pytest.raises(MalformedReview):
        review(document, DEFAULTS)


def test_the_patch_never_touches_the_original_document() -> None:
    pod = make_pod(INJECT, initContainers=[{"name": "migrate", "image": "x"}])
    before = copy.deepcopy(pod)
    admit(pod)
    assert pod == before


def test_every_documented_annotation_is_known() -> None:
    assert set(ANNOTATIONS) == {
        f"integration-sidecar.io/{name}"
        for name in (
            "inject",
            "mode",
            "config-map",
            "secret",
            "port",
            "unix-socket",
            "probes",
            "log-level",
            "image",
            "cpu-request",
            "cpu-limit",
            "memory-request",
            "memory-limit",
            "drain-seconds",
        )
    }


def parse_injector(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["injector", "--tls-cert", "c", "--tls-key", "k", *argv])


def test_the_command_line_gives_the_injector_defaults() -> None:
    args = parse_injector(
        "--image", "img:1", "--mode", "container", "--port", "7000", "--unix-socket",
        "--config-map", "cfg", "--memory-limit", "512Mi", "--sidecar-log-level", "warning",
        "--probes", "exec",
    )  # fmt: skip
    defaults = sidecar_defaults(args)
    assert defaults.image == "img:1"
    assert defaults.mode == "container"
    assert defaults.port == 7000
    assert defaults.unix_socket is True
    assert defaults.config_map == "cfg"
    assert defaults.log_level == "warning"
    assert defaults.probes == "exec"
    assert defaults.resources.memory_limit == "512Mi"
    assert defaults.resources.cpu_request == "50m"


def test_a_bad_default_is_refused_naming_the_argument() -> None:
    with pytest.raises(InvalidAnnotation, match="--port: 'x'"):
        sidecar_defaults(parse_injector("--image", "img:1", "--port", "x"))
    with pytest.raises(SystemExit):
        parse_injector("--port", "1")  # --image is required


def test_the_patch_appends_to_existing_lists_with_plain_add_operations(validate: Any) -> None:
    app = {
        "name": "app",
        "image": "shop:1",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    annotations = {
        **INJECT,
        "integration-sidecar.io/unix-socket": "true",
        "integration-sidecar.io/config-map": "cfg",
    }
    pod = make_pod(annotations, containers=[app], volumes=[{"name": "data", "emptyDir": {}}])
    response = admit(pod)
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {op["op"] for op in patch} == {"add"}
    result = injected(pod, validate)
    assert [v["name"] for v in result["spec"]["volumes"]] == [
        "data",
        "integration-sidecar-tmp",
        "integration-sidecar-config",
        "integration-sidecar-socket",
    ]
    assert [m["name"] for m in result["spec"]["containers"][0]["volumeMounts"]] == [
        "data",
        "integration-sidecar-socket",
    ]


def test_exec_probes_keep_the_sidecar_on_loopback_for_clusters_without_grpc_probes(
    validate: Any,
) -> None:
    annotations = {**INJECT, "integration-sidecar.io/probes": "exec"}
    sidecar = sidecar_of(injected(make_pod(annotations), validate))
    assert sidecar["args"] == ["serve", "--listen", "127.0.0.1:50051"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["exec"]["command"] == [
            "python",
            "-m",
            "sidecar.injector.probe",
            "127.0.0.1:50051",
        ]
    none = {**INJECT, "integration-sidecar.io/probes": "none"}
    bare = sidecar_of(injected(make_pod(none), validate))
    assert bare["args"] == ["serve", "--listen", "127.0.0.1:50051"]
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(bare)
