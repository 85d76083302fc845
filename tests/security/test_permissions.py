"""Per-caller permissions: a caller (a bearer token or a client certificate identity) may call
only the services, methods and targets it was granted; everything else is PERMISSION_DENIED
with the policy named in ErrorInfo. Health stays open; reflection is a permission of its own.

The acceptance test walks every service the server registers, found through reflection, so a
new service is covered without touching this file (and `SERVICES` must all be configured
here, which the test checks too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security.certs import client_cert
from support import error_info

from generated.integration.v1 import cache_pb2, cache_pb2_grpc, pubsub_pb2, pubsub_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.server import SERVICES, RunningServer, ServerStartError
from sidecar.testing import serve_for_test

LIMITED = "limited-token-4f1c"
ADMIN = "admin-token-9a2e"
HEALTH = "grpc.health.v1.Health"


def every_service_config(folder: Path) -> str:
    """One service of every type (so every proto service is registered), and two callers."""
    return f"""
server:
  auth:
    callers:
      limited:
        token: {LIMITED}
        allow:
          - services: [CacheService]
            targets: [sessions]
      admin:
        token: {ADMIN}
        allow:
          - services: ["*"]
services:
  cache: {{type: cache}}
  sessions: {{type: cache}}
  pubsub: {{type: pubsub}}
  db: {{type: sql, backend: sqlite, path: {folder / "db.sqlite"}}}
  llm: {{type: ai_model, provider: echo, model: echo}}
  aws: {{type: cloud, region: us-east-1, endpoint_url: "http://127.0.0.1:9"}}
  files: {{type: objectstore, backend: local, root: {folder / "objects"}}}
  rest: {{type: api, base_url: "http://127.0.0.1:9"}}
  gql: {{type: graphql, endpoint: "http://127.0.0.1:9/graphql"}}
  ws: {{type: websocket, url: "ws://127.0.0.1:9/"}}
  jobs: {{type: queue}}
"""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serve_for_test(every_service_config(tmp_path)) as running:
        yield running


@pytest.fixture
async def channel(sidecar: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


async def reflected_services(channel: grpc.aio.Channel, token: str) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [r async for r in stub.ServerReflectionInfo(iter([request]), metadata=bearer(token))]
    return [s.name for s in replies[0].list_services_response.service]


async def call_raw(channel: grpc.aio.Channel, method: str, token: str) -> grpc.StatusCode:
    """Call `method` with an empty request (of whatever shape it streams) and `token`."""
    service_name, method_name = method.lstrip("/").split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service_name)
    shape = descriptor.methods_by_name[method_name]
    metadata = bearer(token)
    try:
        if shape.client_streaming and shape.server_streaming:
            async for _ in channel.stream_stream(method)(iter([b""]), metadata=metadata):
                pass
        elif shape.client_streaming:
            await channel.stream_unary(method)(iter([b""]), metadata=metadata)
        elif shape.server_streaming:
            async for _ in channel.unary_stream(method)(b"", metadata=metadata):
                pass
        else:
            await channel.unary_unary(method)(b"", metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.PERMISSION_DENIED:
            info = error_info(error)
            assert (info.reason, info.metadata["policy"]) == ("PERMISSION_DENIED", "limited")
        return error.code()
    return grpc.StatusCode.OK


async def test_a_caller_limited_to_one_service_is_refused_every_other_method(
    channel: grpc.aio.Channel,
) -> None:
    services = await reflected_services(channel, ADMIN)
    assert {s.name for s in SERVICES} <= set(services)  # every service is configured here
    methods = [
        f"/{name}/{method.name}"
        for name in services
        if name not in (HEALTH, "integration.v1.CacheService")
        for method in descriptor_pool.Default().FindServiceByName(name).methods
    ]
    assert len(methods) >= len(services) - 2
    codes = {method: await call_raw(channel, method, LIMITED) for method in methods}
    assert {m: c for m, c in codes.items() if c is not grpc.StatusCode.PERMISSION_DENIED} == {}


async def test_every_cache_method_on_another_target_is_refused(
    channel: grpc.aio.Channel,
) -> None:
    # The default target ("cache") is not "sessions" either: an empty target is checked by
    # the name it resolves to, before the rest of the request is validated.
    service = descriptor_pool.Default().FindServiceByName("integration.v1.CacheService")
    refused: dict[tuple[str, str], tuple[grpc.StatusCode, str, str]] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        for target in ("cache", ""):
            call = channel.unary_unary(f"/{service.full_name}/{method.name}")
            try:
                await call(request(target=target).SerializeToString(), metadata=bearer(LIMITED))
            except grpc.aio.AioRpcError as error:
                info = error_info(error)
                refused[method.name, target] = (
                    error.code(),
                    info.metadata["policy"],
                    info.metadata["target"],
                )
    expected = (grpc.StatusCode.PERMISSION_DENIED, "limited", "cache")
    assert refused == {(m.name, t): expected for m in service.methods for t in ("cache", "")}


async def test_the_granted_service_and_target_is_served(channel: grpc.aio.Channel) -> None:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.SetRequest(target="sessions", key="perm-test-k", value=b"v")
    await stub.Set(request, metadata=bearer(LIMITED))
    reply = await stub.Get(
        cache_pb2.GetRequest(target="sessions", key="perm-test-k"), metadata=bearer(LIMITED)
    )
    assert reply.value == b"v"


async def test_health_stays_open_to_every_caller(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_is_a_permission_of_its_own(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reflected_services(channel, LIMITED)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_wrong_token_is_still_unauthenticated(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cache_pb2_grpc.CacheServiceStub(channel).Get(
            cache_pb2.GetRequest(target="sessions", key="k"), metadata=bearer("nope")
        )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_methods_can_be_granted_one_by_one() -> None:
    config = f"""
server:
  auth:
    callers:
      reader: {{token: {LIMITED}, allow: [{{services: [CacheService], methods: [Get]}}]}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        await stub.Get(cache_pb2.GetRequest(key="k"), metadata=bearer(LIMITED))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Set(cache_pb2.SetRequest(key="k", value=b"v"), metadata=bearer(LIMITED))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(refused.value).metadata["method"] == "/integration.v1.CacheService/Set"


async def test_a_certificate_identity_is_a_caller(
    ca: trustme.CA, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca_path = server_files
    web = "spiffe://cluster.local/ns/shop/sa/web"
    config = f"""
server:
  tls: {{cert_file: {cert}, key_file: {key}, client_ca_file: {ca_path}}}
  auth:
    callers:
      web: {{identity: "{web}", allow: [{{services: [PubSubService]}}]}}
"""
    client = client_cert(ca, web)
    credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes(), client.key, client.chain)
    async with serve_for_test(config) as running:
        target = f"localhost:{running.address.rsplit(':', 1)[1]}"
        async with grpc.aio.secure_channel(target, credentials) as channel:
            await pubsub_pb2_grpc.PubSubServiceStub(channel).Publish(
                pubsub_pb2.PublishRequest(channel="perm-test-channel", payload=b"x")
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await cache_pb2_grpc.CacheServiceStub(channel).Get(cache_pb2.GetRequest(key="k"))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(refused.value).metadata["policy"] == "web"


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ("{services: [CacheServce]}", "allow[0].services: unknown service 'CacheServce'"),
        ("{services: [CacheService], methods: [Gett]}", "allow[0].methods: no such method"),
    ],
)
async def test_a_grant_naming_what_does_not_exist_stops_start_up(grant: str, problem: str) -> None:
    config = f"server:\n  auth:\n    callers:\n      x: {{token: t0k3n, allow: [{grant}]}}\n"
    with pytest.raises(ServerStartError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        async with serve_for_test(config):
            pass


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (
            "auth: {tokens: [t0k3n], callers: {x: {token: other}}}",
            ("server.auth", "with callers set, a token in tokens could call nothing"),
        ),
        (
            "auth: {callers: {x: {allow: []}}}",
            ("server.auth.callers.x", "set exactly one of token and identity"),
        ),
        (
            "auth: {callers: {x: {token: t0k3n, identity: 'spiffe://a/b'}}}",
            ("server.auth.callers.x", "set exactly one of token and identity"),
        ),
        (
            "auth: {callers: {x: {identity: 'spiffe://a/b'}}}",
            ("server", "callers x are known by a certificate identity"),
        ),
        (
            "auth: {callers: {x: {token: t0k3n, allow: [{services: []}]}}}",
            ("server.auth.callers.x.allow[0].services", "should have at least 1 item"),
        ),
    ],
)
def test_caller_settings_are_checked_when_the_config_loads(
    server: str, problem: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f"server: {{{server}}}\n", {})
    path, message = problem
    assert [(p, m) for p, m in refused.value.problems if p == path and message in m], (
        refused.value.problems
    )
