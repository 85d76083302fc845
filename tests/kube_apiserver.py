"""A throwaway Kubernetes v1.20.2 control plane for tests: etcd and kube-apiserver on free
loopback ports, and the built kubectl pointed at it.

Only the API server runs: no controller manager, scheduler or kubelet, so pods stay Pending,
nothing is garbage-collected and namespaces never finish terminating; the whole etcd data
directory is thrown away at the end instead. Admission is real, including mutating webhooks.

The binaries come from `scripts/build-kube-apiserver.sh` (Debian bookworm's kubernetes source
package, upstream v1.20.2): `$KUBE_BIN`, else the script's default cache directory. `etcd` comes
from Debian's etcd-server package (the script installs it). A missing binary fails the test
rather than skipping it: these tests run only from `make test-kubernetes`, which builds them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KUBE_VERSION = "v1.20.2"
DEFAULT_KUBE_BIN = Path.home() / ".cache/integration-sidecar/kube/bin"
_START_TIMEOUT = 60.0  # etcd and the API server start in ~5-8 s on an idle machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kube_binary(name: str) -> str:
    """The path of a built Kubernetes binary; fails the test when it is missing."""
    directory = Path(os.environ.get("KUBE_BIN") or DEFAULT_KUBE_BIN)
    path = directory / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/build-kube-apiserver.sh (or set KUBE_BIN)")
    return str(path)


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        pytest.fail("etcd is not installed: run scripts/build-kube-apiserver.sh")
    return found


@dataclass
class Process:
    """A started server process; its output goes to a file (a pipe could fill and block it)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextmanager
def started(name: str, command: list[str], directory: Path) -> Iterator[Process]:
    """Run `command` until the block ends; its stdout and stderr go to `<name>.log`."""
    log = directory / f"{name}.log"
    with log.open("wb") as sink:
        popen = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    process = Process(name, popen, log)
    try:
        yield process
    finally:
        process.stop()


def wait_until(ready: Callable[[], bool], process: Process, what: str) -> None:
    """Poll `ready()` until true; fails with the process's log when it exits or times out."""
    deadline = time.monotonic() + _START_TIMEOUT
    while not ready():
        process.check_running()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} not ready after {_START_TIMEOUT:.0f} s:\n{process.tail()}"
            )
        time.sleep(0.2)


def https_get(url: str, context: ssl.SSLContext, token: str | None = None) -> int | None:
    """The status of GET `url` (None: no answer)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# The loopback must never go through a proxy (kubectl, Helm and the API server's webhook
# client all honour these variables).
_NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@dataclass
class Cluster:
    """A running API server and how to reach it."""

    server: str
    kubeconfig: Path
    ca: trustme.CA
    kubectl_path: str
    cache_dir: Path

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; fails with its stderr when `check` and it fails."""
        command = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig)]
        command += ["--cache-dir", str(self.cache_dir), *args]
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **_NO_PROXY},
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def create(self, obj: Mapping[str, Any], *extra: str) -> tuple[dict[str, Any], str]:
        """`kubectl create` one object; returns it as stored (after admission) and the
        warnings kubectl printed."""
        result = self.kubectl("create", "-o", "json", "-f", "-", *extra, stdin=json.dumps(obj))
        created: dict[str, Any] = json.loads(result.stdout)
        return created, result.stderr

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace is not None:
            args += ["-n", namespace]
        output = self.kubectl(*args).stdout.strip()
        return json.loads(output) if output else None


def _write_service_account_key(directory: Path) -> Path:
    """The RSA key the API server signs service account tokens with (required since 1.20)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "sa.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


@contextmanager
def kube_control_plane(directory: Path, ca: trustme.CA) -> Iterator[Cluster]:
    """etcd and kube-apiserver v1.20.2 on free loopback ports, serving a certificate from `ca`;
    an admin bearer token in the kubeconfig."""
    apiserver_bin = kube_binary("kube-apiserver")
    kubectl_bin = kube_binary("kubectl")
    etcd_bin = etcd_binary()
    directory.mkdir(parents=True, exist_ok=True)
    client_port, peer_port, secure_port = free_port(), free_port(), free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"

    serving = ca.issue_cert("127.0.0.1", "localhost")
    serving.cert_chain_pems[0].write_to_path(str(directory / "apiserver.crt"))
    serving.private_key_pem.write_to_path(str(directory / "apiserver.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    sa_key = _write_service_account_key(directory)
    token = base64.b32encode(os.urandom(20)).decode().lower()
    (directory / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')

    with ExitStack() as stack:
        etcd = stack.enter_context(
            started(
                "etcd",
                [
                    etcd_bin,
                    "--name=e2e",
                    f"--data-dir={directory / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=e2e={peer_url}",
                    "--logger=zap",
                ],
                directory,
            )
        )
        wait_until(lambda: _http_ok(f"{etcd_url}/health"), etcd, "etcd")
        apiserver = stack.enter_context(
            started(
                "kube-apiserver",
                [
                    apiserver_bin,
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={secure_port}",
                    "--insecure-port=0",  # 1.20 still opens 127.0.0.1:8080 by default
                    f"--cert-dir={directory / 'certs'}",
                    f"--tls-cert-file={directory / 'apiserver.crt'}",
                    f"--tls-private-key-file={directory / 'apiserver.key'}",
                    f"--client-ca-file={directory / 'ca.crt'}",
                    f"--token-auth-file={directory / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    f"--service-account-key-file={sa_key}",
                    f"--service-account-signing-key-file={sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--enable-admission-plugins=MutatingAdmissionWebhook",
                    # Without a controller manager no namespace gets its `default` service
                    # account (nor a token for it), and this plugin would refuse every pod.
                    "--disable-admission-plugins=ServiceAccount",
                    "--profiling=false",
                ],
                directory,
            )
        )
        server = f"https://127.0.0.1:{secure_port}"
        context = ssl.create_default_context()
        ca.configure_trust(context)
        wait_until(
            lambda: https_get(f"{server}/readyz", context, token) == 200,
            apiserver,
            "kube-apiserver",
        )
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(_kubeconfig(server, directory / "ca.crt", token))
        yield Cluster(server, kubeconfig, ca, kubectl_bin, directory / "kubectl-cache")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _kubeconfig(server: str, ca_file: Path, token: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        "current-context": "e2e",
    }
    return json.dumps(config, indent=2)  # JSON is YAML


@dataclass
class Injector:
    """`integration-sidecar injector` as a process, serving HTTPS on 127.0.0.1."""

    url: str
    process: Process


@contextmanager
def injector_process(directory: Path, ca: trustme.CA, *args: str) -> Iterator[Injector]:
    """Run the real injector command (certificate from `ca`) until the block ends."""
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(directory / "injector.crt"))
    issued.private_key_pem.write_to_path(str(directory / "injector.key"))
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("integration-sidecar")),  # the installed command
        "injector",
        f"--listen=127.0.0.1:{port}",
        f"--tls-cert={directory / 'injector.crt'}",
        f"--tls-key={directory / 'injector.key'}",
        *args,
    ]
    with started("injector", command, directory) as process:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        url = f"https://127.0.0.1:{port}"
        wait_until(lambda: https_get(f"{url}/healthz", context) == 200, process, "the injector")
        yield Injector(url, process)
