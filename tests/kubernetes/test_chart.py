"""The Helm chart, linted and rendered by real Helm (the Go SDK inside helm-python-sdk) for the
default values and each documented option; every rendered object validates against the
Kubernetes 1.29 and newest schemas, and values.schema.json refuses bad values."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from kubernetes_schemas import validate_object

from sidecar.cli import _parser
from sidecar.config import parse_config
from sidecar.injector.cli import sidecar_defaults
from sidecar.injector.settings import Resources, SidecarSettings
from sidecar.injector.sidecar import sidecar_container, sidecar_volumes

CHART = Path(__file__).resolve().parents[2] / "helm" / "integration-sidecar"
RELEASE, NAMESPACE = "rel", "sidecars"
FULLNAME = "rel-integration-sidecar"
IMAGE = "ghcr.io/integration-sidecar/integration-sidecar:0.1.0"
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt aside), each validated for Kubernetes."""
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        document
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]
    for document in objects:
        if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
            assert document["metadata"]["name"]  # no schema ships for CRDs: shape only
            assert isinstance(document["spec"], dict)
        else:
            validate_object(document)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def injector_defaults(objects: list[dict[str, Any]]) -> SidecarSettings:
    """What the rendered injector would inject, parsed by the injector's own command line."""
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return sidecar_defaults(_parser().parse_args(container["args"]))


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"tls": {"source": "cert-manager"}, "serviceMonitor": {"enabled": True}},
        {"sidecar": {"mode": "container", "unixSocket": True, "configMap": "c", "config": {}}},
        {"injector": {"enabled": False}},
    ],
)
def test_the_chart_passes_strict_lint(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_defaults_render_the_injector_with_its_webhook_and_certificate(
    chart: helm_python.Chart,
) -> None:
    objects = render(chart)
    assert kinds(objects) == [
        "Deployment",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    for document in objects:
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "integration-sidecar"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert injector_defaults(objects) == SidecarSettings(image=IMAGE)
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1

    webhook = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["rules"][0]["resources"] == ["pods"]
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    assert webhook["clientConfig"]["service"] == {
        "name": FULLNAME,
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "kube-node-lease",
    ]
    assert webhook["objectSelector"]["matchExpressions"] == [
        {"key": "integration-sidecar.io/injector", "operator": "DoesNotExist"}
    ]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "integration-sidecar.io/injector" in template_labels  # so never sent to itself

    secret = one(objects, "Secret", f"{FULLNAME}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    check_certificate(secret["data"])


def check_certificate(data: dict[str, str]) -> None:
    """The Helm-generated certificate is signed by the CA and names the Service."""
    ca = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    public_key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    assert base64.b64decode(data["tls.key"]).startswith(b"-----BEGIN")


def test_cert_manager_makes_its_own_ca_chain_and_injects_the_ca(
    chart: helm_python.Chart,
) -> None:
    objects = render(chart, {"tls": {"source": "cert-manager"}})
    assert "Secret" not in kinds(objects)
    certificate = one(objects, "Certificate", f"{FULLNAME}-tls")
    assert certificate["spec"]["secretName"] == f"{FULLNAME}-tls"
    assert f"{FULLNAME}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": f"{FULLNAME}-ca", "kind": "Issuer"}
    assert one(objects, "Certificate", f"{FULLNAME}-ca")["spec"]["isCA"] is True
    assert one(objects, "Issuer", f"{FULLNAME}-ca")["spec"]["ca"]["secretName"] == (
        f"{FULLNAME}-ca"
    )
    configuration = one(objects, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-tls"
    }
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]


def test_cert_manager_with_a_given_issuer_makes_only_the_certificate(
    chart: helm_python.Chart,
) -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    objects = render(
        chart, {"tls": {"source": "cert-manager", "certManager": {"issuerRef": issuer}}}
    )
    assert kinds(objects).count("Certificate") == 1
    assert "Issuer" not in kinds(objects)
    assert one(objects, "Certificate", f"{FULLNAME}-tls")["spec"]["issuerRef"] == issuer


def test_sidecar_options_reach_the_injector(chart: helm_python.Chart) -> None:
    values = {
        "image": {"repository": "mirror.local/sidecar", "digest": "sha256:" + "b" * 64},
        "sidecar": {
            "mode": "container",
            "port": 6000,
            "unixSocket": True,
            "probes": "exec",
            "drainSeconds": 15,
            "logLevel": "debug",
            "configMap": "team-sidecar",
            "secret": "team-secrets",
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        },
    }
    objects = render(chart, values)
    assert injector_defaults(objects) == SidecarSettings(
        image="mirror.local/sidecar@sha256:" + "b" * 64,
        mode="container",
        port=6000,
        unix_socket=True,
        probes="exec",
        drain_seconds=15,
        log_level="debug",
        config_map="team-sidecar",
        secret="team-secrets",
        resources=Resources(cpu_request="100m", cpu_limit="1", memory_limit="1Gi"),
    )


def test_the_chart_can_create_the_sidecar_config_in_several_namespaces(
    chart: helm_python.Chart,
) -> None:
    config = {
        "server": {"log_level": "${INTEGRATION_SIDECAR_LOG_LEVEL:-info}"},
        "services": {"cache": {"type": "cache", "backend": "memory"}},
    }
    values = {
        "sidecar": {"configMap": "sidecar-config", "config": config, "configNamespaces": ["a", "b"]}
    }
    objects = render(chart, values)
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert [m["metadata"]["namespace"] for m in maps] == ["a", "b"]
    assert yaml.safe_load(maps[0]["data"]["config.yaml"]) == config
    loaded = parse_config(maps[0]["data"]["config.yaml"], {})  # the sidecar accepts it
    assert loaded.server.log_level == "info"
    only_here = render(chart, {"sidecar": {"configMap": "sidecar-config", "config": config}})
    assert [o["metadata"]["namespace"] for o in only_here if o["kind"] == "ConfigMap"] == [
        NAMESPACE
    ]
    with pytest.raises(helm_python.HelmRenderError, match=r"sidecar\.configMap must name"):
        render(chart, {"sidecar": {"config": config}})


def test_injector_options(chart: helm_python.Chart) -> None:
    values = {
        "injector": {
            "replicaCount": 3,
            "logLevel": "debug",
            "port": 9443,
            "tlsReloadInterval": 2.5,
            "podDisruptionBudget": {"enabled": False},
            "resources": {"requests": {"cpu": "10m"}},
            "podAnnotations": {"team": "platform"},
            "podLabels": {"tier": "control"},
            "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["system"]}
                                ]
                            }
                        ]
                    }
                }
            },
        },
        "serviceAccount": {"create": False, "name": "existing"},
        "imagePullSecrets": [{"name": "regcred"}],
        "webhook": {
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            # Helm merges maps with the defaults: null drops the default expressions.
            "namespaceSelector": {"matchLabels": {"sidecars": "enabled"}, "matchExpressions": None},
            "objectSelector": {
                "matchLabels": {"team": "shop"},
                "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
            },
        },
    }
    objects = render(chart, values)
    assert "PodDisruptionBudget" not in kinds(objects)
    assert "ServiceAccount" not in kinds(objects)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["metadata"]["annotations"] == {"team": "platform"}
    assert pod["metadata"]["labels"]["tier"] == "control"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "existing"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["affinity"] == values["injector"]["affinity"]  # type: ignore[index]
    assert spec["containers"][0]["ports"][0]["containerPort"] == 9443
    args = _parser().parse_args(spec["containers"][0]["args"])
    assert (args.listen, args.log_level, args.tls_reload_interval) == (
        "0.0.0.0:9443",
        "debug",
        2.5,
    )
    webhook = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["timeoutSeconds"] == 10
    assert webhook["namespaceSelector"] == {"matchLabels": {"sidecars": "enabled"}}
    assert webhook["objectSelector"] == {
        "matchLabels": {"team": "shop"},
        "matchExpressions": [
            {"key": "integration-sidecar.io/injector", "operator": "DoesNotExist"},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }


def test_a_single_replica_gets_no_disruption_budget(chart: helm_python.Chart) -> None:
    assert "PodDisruptionBudget" not in kinds(render(chart, {"injector": {"replicaCount": 1}}))


def test_the_service_monitor_scrapes_the_injector_over_tls(chart: helm_python.Chart) -> None:
    values = {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}}}
    objects = render(chart, values)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (
        "https",
        "/metrics",
        "https",
    )
    assert endpoint["interval"] == "15s"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": f"{FULLNAME}-tls", "key": "ca.crt"}
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()


def test_without_the_injector_only_the_sidecar_config_is_rendered(
    chart: helm_python.Chart,
) -> None:
    values = {
        "injector": {"enabled": False},
        "tls": {"source": "cert-manager"},
        "serviceMonitor": {"enabled": True},
        "sidecar": {"configMap": "sidecar-config", "config": {"server": {"reflection": False}}},
    }
    assert kinds(render(chart, values)) == ["ConfigMap"]
    notes = chart.render(values, name=RELEASE, namespace=NAMESPACE)[
        "integration-sidecar/templates/NOTES.txt"
    ]
    assert "The injector is disabled" in notes


def test_notes_explain_the_annotation(chart: helm_python.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)[
        "integration-sidecar/templates/NOTES.txt"
    ]
    assert 'integration-sidecar.io/inject: "true"' in notes
    assert "INTEGRATION_SIDECAR_ADDRESS (127.0.0.1:50051)" in notes


@pytest.mark.parametrize(
    "values",
    [
        {"unknown": True},
        {"image": {"repository": ""}},
        {"image": {"repository": "x", "digest": "md5:abc"}},
        {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
        {"injector": {"replicaCount": 0}},
        {"injector": {"port": 70000}},
        {"injector": {"logLevel": "trace"}},
        {"injector": {"resources": {"requests": {"cpu": "lots"}}}},
        {"injector": {"tlsReloadInterval": 0}},
        {"tls": {"source": "vault"}},
        {"tls": {"helm": {"validityDays": 0}}},
        {"tls": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
        {"tls": {"certManager": {"duration": "90 days"}}},
        {"webhook": {"failurePolicy": "Retry"}},
        {"webhook": {"timeoutSeconds": 31}},
        {"webhook": {"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}},
        {"sidecar": {"mode": "sidecar"}},
        {"sidecar": {"probes": "http"}},
        {"sidecar": {"port": "50051"}},
        {"sidecar": {"drainSeconds": 301}},
        {"sidecar": {"logLevel": "verbose"}},
        {"sidecar": {"configMap": "Not_A_Name"}},
        {"sidecar": {"resources": {"limits": {"memory": "1 GB"}}}},
        {"sidecar": {"resources": {"limits": {"gpu": "1"}}}},
        {"serviceMonitor": {"enabled": "yes"}},
    ],
)
def test_the_values_schema_refuses_bad_values(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# -- The named template, included by hand from a chart that depends on this one. --

PARENT_DEPLOYMENT = """\
{{- $sidecar := index .Subcharts "integration-sidecar" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      {{- if eq $sidecar.Values.sidecar.mode "native" }}
      initContainers:
        {{- include "integration-sidecar.sidecar.container" $sidecar | nindent 8 }}
      {{- end }}
      containers:
        - name: app
          image: shop:1
          env:
            {{- include "integration-sidecar.sidecar.env" $sidecar | nindent 12 }}
          volumeMounts:
            {{- include "integration-sidecar.sidecar.appVolumeMounts" $sidecar | nindent 12 }}
        {{- if eq $sidecar.Values.sidecar.mode "container" }}
        {{- include "integration-sidecar.sidecar.container" $sidecar | nindent 8 }}
        {{- end }}
      volumes:
        {{- include "integration-sidecar.sidecar.volumes" $sidecar | nindent 8 }}
"""


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[helm_python.Chart]:
    root = tmp_path_factory.mktemp("parent") / "shop"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "shop",
                "version": "1.0.0",
                "dependencies": [{"name": "integration-sidecar", "version": "0.1.0"}],
            }
        )
    )
    (root / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    shutil.copytree(CHART, root / "charts" / "integration-sidecar")
    loaded = helm_python.Chart.load(root)
    yield loaded
    loaded.close()


@pytest.mark.parametrize(
    ("sidecar_values", "settings"),
    [
        ({}, SidecarSettings(image=IMAGE)),
        (
            {
                "mode": "container", "port": 7000, "configMap": "shop-sidecar",
                "secret": "shop-secrets", "logLevel": "warning", "drainSeconds": 9,
                "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                              "limits": {"memory": "64Mi"}},
            },
            SidecarSettings(
                image=IMAGE, mode="container", port=7000, config_map="shop-sidecar",
                secret="shop-secrets", log_level="warning", drain_seconds=9,
                resources=Resources(cpu_request="20m", memory_request="32Mi", memory_limit="64Mi"),
            ),
        ),
        ({"unixSocket": True}, SidecarSettings(image=IMAGE, unix_socket=True)),
        ({"probes": "exec", "mode": "container"},
         SidecarSettings(image=IMAGE, probes="exec", mode="container")),
        ({"probes": "none"}, SidecarSettings(image=IMAGE, probes="none")),
    ],
)  # fmt: skip
def test_the_hand_include_template_gives_the_same_sidecar_as_the_injector(
    parent_chart: helm_python.Chart, sidecar_values: dict[str, Any], settings: SidecarSettings
) -> None:
    values = {"integration-sidecar": {"sidecar": sidecar_values, "injector": {"enabled": False}}}
    manifests = parent_chart.render(values, name="shop", namespace="shop")
    rendered = [p for p, text in manifests.items() if yaml.safe_load(text) and "NOTES" not in p]
    assert rendered == ["shop/templates/deployment.yaml"]  # nothing else without the injector
    deployment = yaml.safe_load(manifests["shop/templates/deployment.yaml"])
    validate_object(deployment)
    pod = deployment["spec"]["template"]["spec"]
    by_hand = [
        c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] != "app"
    ]
    assert json.loads(json.dumps(by_hand)) == [sidecar_container(settings)]
    assert pod["volumes"] == sidecar_volumes(settings)
    app = next(c for c in pod["containers"] if c["name"] == "app")
    address = (
        "unix:/run/integration-sidecar/sidecar.sock"
        if settings.unix_socket
        else (f"127.0.0.1:{settings.port}")
    )
    assert app["env"] == [{"name": "INTEGRATION_SIDECAR_ADDRESS", "value": address}]
