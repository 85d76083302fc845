"""The webhook over real HTTPS (certificates from trustme): AdmissionReviews, health, metrics,
bad bodies, the certificate rotated under a running server, and the command line end to end."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from sidecar.injector.probe import check
from sidecar.injector.settings import SidecarSettings
from sidecar.injector.webhook import MAX_REVIEW_BYTES, RunningWebhook, start_webhook
from sidecar.server import RunningServer

DEFAULTS = SidecarSettings(image="registry.example/integration-sidecar:0.1.0")
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "app", "annotations": {"integration-sidecar.io/inject": "true"}},
    "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
}
REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "b8f1c2a0-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": "CREATE",
        "object": POD,
    },
}


def write_pair(ca: trustme.CA, directory: Path) -> None:
    """Issue a server certificate and swap both files in as kubelet does (a rename)."""
    issued = ca.issue_cert("127.0.0.1", "localhost")
    for name, blob in (("tls.crt", issued.cert_chain_pems), ("tls.key", [issued.private_key_pem])):
        staging = directory / f".{name}.new"
        staging.write_bytes(b"".join(pem.bytes() for pem in blob))
        os.replace(staging, directory / name)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_dir(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    return ca, tmp_path


@pytest.fixture
async def webhook(tls_dir: tuple[trustme.CA, Path]) -> AsyncIterator[RunningWebhook]:
    _, directory = tls_dir
    running = await start_webhook(
        DEFAULTS,
        host="127.0.0.1",
        port=0,
        cert_file=str(directory / "tls.crt"),
        key_file=str(directory / "tls.key"),
        reload_interval=3600,  # the tests reload by hand, except the watcher test
    )
    try:
        yield running
    finally:
        await running.stop()


async def post(
    port: int, ca: trustme.CA, body: bytes | io.BytesIO, path: str = "/mutate"
) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(ssl=client_context(ca), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"https://localhost:{port}{path}",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.read()


async def get(port: int, ca: trustme.CA, path: str) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(ssl=client_context(ca), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def test_a_review_over_https_is_answered_with_a_patch(
    webhook: RunningWebhook, tls_dir: tuple[trustme.CA, Path]
) -> None:
    ca, _ = tls_dir
    status, body = await post(webhook.port, ca, json.dumps(REVIEW).encode())
    assert status == 200
    response = json.loads(body)["response"]
    assert response["uid"] == REVIEW["request"]["uid"]  # type: ignore[index]
    assert response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch[1]["path"] == "/spec/initContainers"
    assert patch[1]["value"][0]["name"] == "integration-sidecar"


async def test_health_metrics_and_bad_bodies(
    webhook: RunningWebhook, tls_dir: tuple[trustme.CA, Path]
) -> None:
    ca, _ = tls_dir
    assert await get(webhook.port, ca, "/healthz") == (200, "ok")
    status, body = await post(webhook.port, ca, b"{not json")
    assert status == 400
    status, body = await post(webhook.port, ca, json.dumps({"kind": "Pod"}).encode())
    assert status == 400
    assert "not an AdmissionReview" in json.loads(body)["error"]
    status, _ = await post(webhook.port, ca, io.BytesIO(b" " * (MAX_REVIEW_BYTES + 1)))
    assert status == 413
    await post(webhook.port, ca, json.dumps(REVIEW).encode())
    status, metrics = await get(webhook.port, ca, "/metrics")
    assert status == 200
    assert 'integration_sidecar_injector_reviews_total{outcome="malformed"} 2.0' in metrics
    assert 'integration_sidecar_injector_reviews_total{outcome="injected"} 1.0' in metrics


async def test_a_rotated_certificate_is_served_without_a_restart(
    webhook: RunningWebhook, tls_dir: tuple[trustme.CA, Path]
) -> None:
    old_ca, directory = tls_dir
    assert webhook.certificate.reload_if_changed() is False  # nothing changed yet
    new_ca = trustme.CA()
    write_pair(new_ca, directory)
    assert webhook.certificate.reload_if_changed() is True
    assert await get(webhook.port, new_ca, "/healthz") == (200, "ok")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(webhook.port, old_ca, "/healthz")


async def test_a_broken_certificate_file_keeps_the_current_one(
    webhook: RunningWebhook, tls_dir: tuple[trustme.CA, Path]
) -> None:
    ca, directory = tls_dir
    (directory / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nhalf written")
    assert webhook.certificate.reload_if_changed() is False
    assert await get(webhook.port, ca, "/healthz") == (200, "ok")
    (directory / "tls.key").unlink()
    assert webhook.certificate.reload_if_changed() is False
    assert await get(webhook.port, ca, "/healthz") == (200, "ok")


async def test_the_watcher_picks_up_a_new_certificate(
    tls_dir: tuple[trustme.CA, Path],
) -> None:
    _, directory = tls_dir
    running = await start_webhook(
        DEFAULTS,
        host="127.0.0.1",
        port=0,
        cert_file=str(directory / "tls.crt"),
        key_file=str(directory / "tls.key"),
        reload_interval=0.02,
    )
    try:
        new_ca = trustme.CA()
        write_pair(new_ca, directory)
        for _ in range(250):  # bounded: 5 s at most
            if running.certificate.reloads:
                break
            await asyncio.sleep(0.02)
        assert running.certificate.reloads == 1
        assert await get(running.port, new_ca, "/healthz") == (200, "ok")
    finally:
        await running.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.e2e
async def test_the_injector_command_serves_until_sigterm(
    tls_dir: tuple[trustme.CA, Path],
) -> None:
    ca, directory = tls_dir
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "injector",
        "--listen", f"127.0.0.1:{port}",
        "--tls-cert", str(directory / "tls.crt"), "--tls-key", str(directory / "tls.key"),
        "--image", "registry.example/integration-sidecar:0.1.0", "--mode", "container",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(200):  # bounded: 10 s at most
            try:
                status, body = await post(port, ca, json.dumps(REVIEW).encode())
                break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)
        assert status == 200
        patch = json.loads(base64.b64decode(json.loads(body)["response"]["patch"]))
        assert any(op["path"] == "/spec/containers/0" for op in patch)  # --mode container
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, err.decode()
    assert b"pod shop/app: injected (container)" in out + err


async def test_the_command_refuses_a_bad_default() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "injector", "--tls-cert", "c", "--tls-key", "k",
        "--image", "img:1", "--drain-seconds", "1000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert b"--drain-seconds: '1000' is not a whole number from 0 to 300" in err


async def test_the_unix_socket_probe_checks_the_sidecars_health(sidecar: RunningServer) -> None:
    assert await asyncio.to_thread(check, sidecar.address) is True
    assert await asyncio.to_thread(check, f"127.0.0.1:{free_port()}", 0.5) is False
