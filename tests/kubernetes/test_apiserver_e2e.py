"""Through a real API server: kube-apiserver v1.20.2 (built by scripts/build-kube-apiserver.sh)
calls the real `integration-sidecar injector` process over HTTPS for pods created with kubectl,
and Helm (helm-python-sdk) installs, upgrades and uninstalls the chart into it.

v1.20 has no native sidecars and no gRPC probes, so the injector runs in its regular-container
mode with exec probes here (as the README advises for clusters before 1.29); the native-sidecar
and gRPC-probe output is covered by the schema validation in test_injector.py. No kubelet runs:
pods stay Pending, and what is asserted is the pod the API server stored.

Run by `make test-kubernetes` only (marker `kube_apiserver`, deselected by default).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import trustme
from kube_apiserver import KUBE_VERSION, Cluster, Injector, injector_process, kube_control_plane

from sidecar.injector.settings import SidecarSettings, settings_for
from sidecar.injector.sidecar import sidecar_container, sidecar_volumes

pytestmark = [pytest.mark.kube_apiserver, pytest.mark.timeout(180)]

CHART = Path(__file__).resolve().parents[2] / "helm" / "integration-sidecar"
IMAGE = "registry.example/integration-sidecar:0.1.0"
# How an older cluster's injector runs: a regular container, probed by the image's command.
INJECTOR_ARGS = ("--image", IMAGE, "--mode", "container", "--probes", "exec")
DEFAULTS = SidecarSettings(image=IMAGE, mode="container", probes="exec")
SELECTOR_LABEL = "integration-sidecar-e2e"
"""Each webhook registered here only sees namespaces carrying this label with its own value,
so the test's injector and the chart's webhook never answer for each other's pods."""
INJECT = {"integration-sidecar.io/inject": "true"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def contains(actual: Any, expected: Any) -> bool:
    """Whether `actual` holds everything in `expected` (the API server adds defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


def pod(name: str, annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/shop:1"}], **spec},
    }


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with kube_control_plane(tmp_path_factory.mktemp("kube"), trustme.CA()) as running:
        yield running


def labelled_namespace(cluster: Cluster, value: str) -> str:
    name = unique("e2e")
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {SELECTOR_LABEL: value}},
        }
    )
    return name


def drop_namespace(cluster: Cluster, name: str) -> None:
    """Pods never scheduled are deleted at once; the namespace itself stays Terminating (no
    namespace controller runs) and goes with the throwaway etcd."""
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--wait=false")
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def injector(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    """The injector process, registered with a `url` client config on 127.0.0.1."""
    directory = tmp_path_factory.mktemp("injector")
    with injector_process(directory, cluster.ca, *INJECTOR_ARGS) as running:
        name = unique("e2e-injector")
        registration = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "inject.integration-sidecar.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    # Fail, unlike the chart's Ignore: a webhook call that goes wrong must fail
                    # the test, not quietly admit an uninjected pod.
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 10,
                    "clientConfig": {
                        "url": f"{running.url}/mutate",
                        "caBundle": base64.b64encode(cluster.ca.cert_pem.bytes()).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {SELECTOR_LABEL: "injector"}},
                }
            ],
        }
        cluster.create(registration)
        wait_for_webhook(cluster)
        yield running
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name)


def wait_for_webhook(cluster: Cluster) -> None:
    """The API server picks a new registration up from a watch: poll with server dry runs."""
    namespace = labelled_namespace(cluster, "injector")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            result = cluster.kubectl(
                "create", "--dry-run=server", "-o", "json", "-n", namespace, "-f", "-",
                stdin=json.dumps(pod("probe", INJECT)),
            )  # fmt: skip
            if len(json.loads(result.stdout)["spec"]["containers"]) == 2:
                return
            time.sleep(0.1)
        raise AssertionError("the webhook registration never took effect")
    finally:
        drop_namespace(cluster, namespace)


@pytest.fixture
def namespace(cluster: Cluster, injector: Injector) -> Iterator[str]:
    """A namespace whose pods go through the test's injector."""
    name = labelled_namespace(cluster, "injector")
    yield name
    drop_namespace(cluster, name)


def test_the_api_server_is_the_one_built_from_debian(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBE_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBE_VERSION


def test_an_annotated_pod_gets_the_sidecar_as_a_regular_container(
    cluster: Cluster, namespace: str, injector: Injector
) -> None:
    created, warnings = cluster.create(
        pod("shop", INJECT, volumes=[{"name": "data", "emptyDir": {}}]), "-n", namespace
    )

    assert warnings == ""
    spec = created["spec"]
    assert [c["name"] for c in spec["containers"]] == ["integration-sidecar", "app"]
    sidecar, app = spec["containers"]
    # Everything the injector sent survived the API server's validation and conversion.
    assert contains(sidecar, sidecar_container(DEFAULTS)), sidecar
    assert "restartPolicy" not in sidecar
    assert sidecar["readinessProbe"]["exec"]["command"] == [
        "python", "-m", "sidecar.injector.probe", "127.0.0.1:50051",
    ]  # fmt: skip
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert env_of(app)["INTEGRATION_SIDECAR_ADDRESS"] == "127.0.0.1:50051"
    assert [v["name"] for v in spec["volumes"]] == ["data", "integration-sidecar-tmp"]
    annotations = created["metadata"]["annotations"]
    assert annotations["integration-sidecar.io/status"] == "injected"
    assert annotations["kubectl.kubernetes.io/default-container"] == "app"
    assert created["status"]["phase"] == "Pending"  # no scheduler, no kubelet
    stored = cluster.get("pod", "shop", namespace)
    assert stored is not None and stored["spec"]["containers"][0]["name"] == "integration-sidecar"
    assert f"pod {namespace}/shop: injected (container)" in injector.process.log.read_text()


def test_annotations_override_the_injectors_defaults(cluster: Cluster, namespace: str) -> None:
    annotations = {
        **INJECT,
        "integration-sidecar.io/unix-socket": "true",
        "integration-sidecar.io/config-map": "shop-sidecar",
        "integration-sidecar.io/secret": "shop-sidecar-env",
        "integration-sidecar.io/log-level": "debug",
        "integration-sidecar.io/cpu-limit": "500m",
        "integration-sidecar.io/memory-limit": "128Mi",
        "integration-sidecar.io/drain-seconds": "0",
    }
    migrate = {"name": "migrate", "image": "registry.example/shop:1"}
    created, _ = cluster.create(
        pod("shop-socket", annotations, initContainers=[migrate]), "-n", namespace
    )

    spec = created["spec"]
    sidecar, app = spec["containers"]
    expected = sidecar_container(settings_for(DEFAULTS, annotations))
    assert contains(sidecar, expected), sidecar
    assert sidecar["args"] == [
        "serve", "--listen", "unix:/run/integration-sidecar/sidecar.sock",
        "--config", "/etc/integration-sidecar/config.yaml",
    ]  # fmt: skip
    assert sidecar["envFrom"] == [{"secretRef": {"name": "shop-sidecar-env"}}]
    assert sidecar["resources"]["limits"] == {"cpu": "500m", "memory": "128Mi"}
    assert "lifecycle" not in sidecar  # drain-seconds 0: no preStop hook
    address = "unix:/run/integration-sidecar/sidecar.sock"
    assert env_of(app)["INTEGRATION_SIDECAR_ADDRESS"] == address
    assert {"name": "integration-sidecar-socket", "mountPath": "/run/integration-sidecar"} in app[
        "volumeMounts"
    ]
    # A regular-container sidecar does not run yet while init containers do: they get nothing.
    assert "env" not in spec["initContainers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["integration-sidecar-config"]["configMap"]["name"] == "shop-sidecar"
    assert "emptyDir" in volumes["integration-sidecar-socket"]


def test_a_pod_without_the_annotation_is_left_alone(cluster: Cluster, namespace: str) -> None:
    created, warnings = cluster.create(pod("plain", {"team": "shop"}), "-n", namespace)

    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert created["metadata"]["annotations"] == {"team": "shop"}
    assert warnings == ""


def test_a_bad_annotation_admits_the_pod_untouched_with_a_warning(
    cluster: Cluster, namespace: str
) -> None:
    annotations = {**INJECT, "integration-sidecar.io/port": "99999"}
    created, warnings = cluster.create(pod("odd-port", annotations), "-n", namespace)

    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert "integration-sidecar.io/status" not in created["metadata"]["annotations"]
    # The admission response's warnings reach the user through kubectl (Kubernetes 1.19+).
    assert (
        "Warning: integration-sidecar not injected: integration-sidecar.io/port: '99999' "
        "is not a whole number from 1 to 65535" in warnings
    )


def test_a_pod_that_already_has_the_sidecar_is_left_alone(cluster: Cluster, namespace: str) -> None:
    manifest = pod("by-hand", INJECT, volumes=sidecar_volumes(DEFAULTS))
    manifest["spec"]["containers"].append(sidecar_container(DEFAULTS))  # as if added by hand
    created, _ = cluster.create(manifest, "-n", namespace)

    assert [c["name"] for c in created["spec"]["containers"]] == ["app", "integration-sidecar"]
    assert "integration-sidecar.io/status" not in created["metadata"]["annotations"]


def test_native_mode_pods_are_refused_by_a_1_20_api_server(
    cluster: Cluster, namespace: str
) -> None:
    """Why clusters before 1.29 need container mode: 1.20 knows no init container
    restartPolicy and allows no probes on init containers, so it refuses the whole pod."""
    annotations = {**INJECT, "integration-sidecar.io/mode": "native"}
    result = cluster.kubectl(
        "create", "-n", namespace, "-f", "-", stdin=json.dumps(pod("native", annotations)),
        check=False,
    )  # fmt: skip

    assert result.returncode != 0
    assert "spec.initContainers[0].readinessProbe: Invalid value" in result.stderr
    assert cluster.get("pod", "native", namespace) is None


def test_the_chart_installs_upgrades_and_uninstalls(cluster: Cluster) -> None:
    release = unique("e2e")
    namespace = labelled_namespace(cluster, "chart-install")
    selected = labelled_namespace(cluster, release)  # the only namespace its webhook sees
    values: dict[str, Any] = {
        # policy/v1 PodDisruptionBudget exists from Kubernetes 1.21.
        "injector": {"podDisruptionBudget": {"enabled": False}},
        "webhook": {"namespaceSelector": {"matchLabels": {SELECTOR_LABEL: release}}},
    }
    helm = helm_python.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    try:
        installed = helm.install(CHART, release, values, namespace=namespace)
        assert (installed["status"], installed["revision"]) == ("deployed", 1)
        deployment = cluster.get("deployment", release + "-integration-sidecar", namespace)
        assert deployment is not None and deployment["spec"]["replicas"] == 2
        assert cluster.get("service", release + "-integration-sidecar", namespace) is not None
        webhook = cluster.get("mutatingwebhookconfiguration", release + "-integration-sidecar")
        secret = cluster.get("secret", release + "-integration-sidecar-tls", namespace)
        assert webhook is not None and secret is not None
        client = webhook["webhooks"][0]["clientConfig"]
        assert client["caBundle"] == secret["data"]["ca.crt"]
        assert client["service"]["namespace"] == namespace

        # No injector pod ever runs here, so the webhook cannot be reached: failurePolicy
        # Ignore admits the pod without the sidecar instead of refusing it.
        created, _ = cluster.create(pod("unreached", INJECT), "-n", selected)
        assert [c["name"] for c in created["spec"]["containers"]] == ["app"]

        values["sidecar"] = {"mode": "container", "probes": "exec"}
        upgraded = helm.upgrade(CHART, release, values, namespace=namespace)
        assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
        deployment = cluster.get("deployment", release + "-integration-sidecar", namespace)
        assert deployment is not None
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--mode=container" in args and "--probes=exec" in args
        # The chart looked the existing certificate up in the cluster and kept it.
        kept = cluster.get("secret", release + "-integration-sidecar-tls", namespace)
        assert kept is not None and kept["data"] == secret["data"]

        assert helm.uninstall(release)["release"]["status"] == "uninstalled"
        assert cluster.get("deployment", release + "-integration-sidecar", namespace) is None
        assert cluster.get("secret", release + "-integration-sidecar-tls", namespace) is None
        assert cluster.get("mutatingwebhookconfiguration", release + "-integration-sidecar") is None
        assert helm.list() == []
    finally:
        helm.uninstall(release, ignore_not_found=True)
        helm.close()
        drop_namespace(cluster, namespace)
        drop_namespace(cluster, selected)
