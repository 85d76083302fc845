"""TLS and mutual TLS on the sidecar's listener: client certificates checked against the CA,
identities (SANs, SPIFFE IDs) against `allowed_identities`, and a rotated certificate served
to new connections without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security.certs import ClientCert, client_cert, write_server_files
from support import error_info

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.server import RunningServer, ServerStartError
from sidecar.testing import serve_for_test

SPIFFE_WEB = "spiffe://cluster.local/ns/shop/sa/web"
# A channel of its own per test call: grpc shares connections between channels in a process.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


def _config(cert: Path, key: Path, ca: Path | None = None, identities: str = "") -> str:
    lines = ["server:", "  tls:", f"    cert_file: {cert}", f"    key_file: {key}"]
    if ca is not None:
        lines.append(f"    client_ca_file: {ca}")
    if identities:
        lines.append(f"    allowed_identities: {identities}")
    return "\n".join(lines) + "\n"


@pytest.fixture
async def mtls_sidecar(server_files: tuple[Path, Path, Path]) -> AsyncIterator[RunningServer]:
    cert, key, ca = server_files
    config = _config(cert, key, ca, f"['{SPIFFE_WEB}', 'spiffe://cluster.local/ns/jobs/*']")
    async with serve_for_test(config) as running:
        yield running


def _port(running: RunningServer) -> str:
    return running.address.rsplit(":", 1)[1]


async def _get(running: RunningServer, ca: trustme.CA, client: ClientCert | None) -> str:
    credentials = grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(),
        client.key if client else None,
        client.chain if client else None,
    )
    target = f"localhost:{_port(running)}"
    async with grpc.aio.secure_channel(target, credentials, options=OWN_CONNECTION) as channel:
        reply = await cache_pb2_grpc.CacheServiceStub(channel).Get(
            cache_pb2.GetRequest(key="tls-test-key"), timeout=5
        )
    return "found" if reply.found else "missing"


async def test_tls_without_client_ca_serves_any_tls_client(
    ca: trustme.CA, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, _ = server_files
    async with serve_for_test(_config(cert, key)) as running:
        assert await _get(running, ca, None) == "missing"


async def test_a_plaintext_client_is_refused_by_a_tls_listener(
    server_files: tuple[Path, Path, Path],
) -> None:
    cert, key, _ = server_files
    async with (
        serve_for_test(_config(cert, key)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cache_pb2_grpc.CacheServiceStub(channel).Get(
                cache_pb2.GetRequest(key="k"), timeout=2
            )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_an_allowed_spiffe_id_is_served(mtls_sidecar: RunningServer, ca: trustme.CA) -> None:
    assert await _get(mtls_sidecar, ca, client_cert(ca, SPIFFE_WEB)) == "missing"


async def test_an_identity_under_an_allowed_prefix_is_served(
    mtls_sidecar: RunningServer, ca: trustme.CA
) -> None:
    client = client_cert(ca, "spiffe://cluster.local/ns/jobs/sa/nightly")
    assert await _get(mtls_sidecar, ca, client) == "missing"


async def test_a_client_without_a_certificate_is_refused(
    mtls_sidecar: RunningServer, ca: trustme.CA
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get(mtls_sidecar, ca, None)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # the handshake fails


async def test_a_certificate_from_another_ca_is_refused(
    mtls_sidecar: RunningServer, ca: trustme.CA
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get(mtls_sidecar, ca, client_cert(trustme.CA(), SPIFFE_WEB))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_disallowed_identity_is_permission_denied_naming_the_policy(
    mtls_sidecar: RunningServer, ca: trustme.CA
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get(mtls_sidecar, ca, client_cert(ca, "spiffe://cluster.local/ns/other/sa/x"))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    info = error_info(refused.value)
    assert info.reason == "PERMISSION_DENIED"
    assert info.metadata["policy"] == "server.tls.allowed_identities"


async def test_health_answers_a_disallowed_identity(
    mtls_sidecar: RunningServer, ca: trustme.CA
) -> None:
    client = client_cert(ca, "spiffe://cluster.local/ns/other/sa/x")
    credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes(), client.key, client.chain)
    target = f"localhost:{_port(mtls_sidecar)}"
    async with grpc.aio.secure_channel(target, credentials, options=OWN_CONNECTION) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _served_certificate(port: str, ca: trustme.CA, client: ClientCert, folder: Path) -> bytes:
    """The DER certificate the listener serves on a new connection."""
    (folder / "c.pem").write_bytes(client.chain)
    (folder / "k.pem").write_bytes(client.key)
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    context.load_cert_chain(folder / "c.pem", folder / "k.pem")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        served = tls.getpeercert(binary_form=True)
    assert served is not None
    return served


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _swap_like_kubernetes(mount: Path, new_data: Path) -> None:
    """What kubelet does to a mounted Secret: files are symlinks through `..data`, which is
    replaced atomically by a symlink to a new timestamped folder."""
    link = mount / "..data_tmp"
    os.symlink(new_data.name, link)
    os.replace(link, mount / "..data")


async def test_a_rotated_certificate_is_served_to_new_connections_without_restart(
    ca: trustme.CA, tmp_path: Path
) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    first_cert, _ = write_server_files(ca, mount / "..2026_01", "localhost")
    os.symlink("..2026_01", mount / "..data")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", mount / name)
    ca.cert_pem.write_to_path(str(mount / "..2026_01" / "ca.crt"))
    os.symlink("..data/ca.crt", mount / "ca.crt")
    config = _config(mount / "tls.crt", mount / "tls.key", mount / "ca.crt")
    client = client_cert(ca, SPIFFE_WEB)
    async with serve_for_test(config) as running:
        port = _port(running)
        before = await asyncio.to_thread(_served_certificate, port, ca, client, tmp_path)
        assert before == _der(first_cert.read_bytes())

        second_cert, _ = write_server_files(ca, mount / "..2026_02", "localhost")
        shutil.copy(mount / "..2026_01" / "ca.crt", mount / "..2026_02" / "ca.crt")
        _swap_like_kubernetes(mount, mount / "..2026_02")

        after = await asyncio.to_thread(_served_certificate, port, ca, client, tmp_path)
        assert after == _der(second_cert.read_bytes())
        assert await _get(running, ca, client) == "missing"  # gRPC over the new certificate


async def test_a_half_written_pair_keeps_the_last_good_certificate(
    ca: trustme.CA, server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_path = server_files
    good = cert.read_bytes()
    client = client_cert(ca, SPIFFE_WEB)
    async with serve_for_test(_config(cert, key, ca_path)) as running:
        other = ca.issue_cert("localhost")
        cert.write_bytes(other.cert_chain_pems[0].bytes())  # the key is still the old one
        served = await asyncio.to_thread(_served_certificate, _port(running), ca, client, tmp_path)
    assert served == _der(good)


async def test_a_key_that_does_not_match_the_certificate_stops_start_up(
    ca: trustme.CA, server_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, _, _ = server_files
    _, other_key = write_server_files(ca, tmp_path / "other")
    with pytest.raises(ServerStartError, match=r"server\.tls"):
        async with serve_for_test(_config(cert, other_key)):
            pass


def test_allowed_identities_need_a_client_ca(server_files: tuple[Path, Path, Path]) -> None:
    cert, key, _ = server_files
    with pytest.raises(ConfigError, match="allowed_identities needs client_ca_file"):
        parse_config(_config(cert, key, None, f"['{SPIFFE_WEB}']"))


def test_an_identity_with_a_star_inside_is_refused(server_files: tuple[Path, Path, Path]) -> None:
    cert, key, ca = server_files
    with pytest.raises(ConfigError, match="invalid identity"):
        parse_config(_config(cert, key, ca, "['spiffe://*/web']"))


async def test_a_missing_certificate_file_stops_start_up(tmp_path: Path) -> None:
    config = _config(tmp_path / "absent.crt", tmp_path / "absent.key")
    with pytest.raises(ServerStartError, match=r"cannot use the TLS files of server\.tls"):
        async with serve_for_test(config):
            pass
