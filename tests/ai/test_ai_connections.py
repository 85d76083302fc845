"""`ai_model` services on http connections: services naming one connection share its one
client (one pool: one TCP connection for calls one after another), the connection's base
URL is their endpoint and its headers go with every request; a service with an inline
endpoint gets a connection of its own; the connection outlives the services and is closed
after them; health pings the connection when it has a health path, else the provider."""

from __future__ import annotations

import pytest
from ai.fake_llm import FakeLLM
from ai.helpers import API_KEY, ai_sidecar, config, model, user
from grpc_health.v1 import health

from generated.integration.v1 import ai_pb2
from sidecar.config import parse_config
from sidecar.connections.http.connection import HttpConnection
from sidecar.runtime.health import HealthMonitor
from sidecar.runtime.integrations import build_integrations


def on_connection(name: str, provider: str = "openai", connection: str = "gw") -> str:
    return (
        f"  {name}:\n    type: ai_model\n    provider: {provider}\n"
        f"    connection: {connection}\n"
        f"    auth: {{type: bearer, token: {API_KEY}}}\n"
        "    model: fake-model\n    retry_policy: {max_retries: 0}\n"
    )


def shared(url: str, extra: str = "") -> str:
    return (
        "connections:\n"
        f"  gw: {{type: http, base_url: '{url}', headers: {{x-gateway: shared}}{extra}}}\n"
        "  gw-v1: {type: http, base_url: '" + url + "/v1'}\n"
    )


async def test_two_services_on_one_connection_share_its_client_and_its_pool(
    fake: FakeLLM,
) -> None:
    text = shared(fake.url) + config(
        on_connection("one", connection="gw-v1"),
        on_connection("two", connection="gw-v1"),
        on_connection("claude", provider="anthropic"),
    )
    async with ai_sidecar(text) as ai:
        integrations = ai.running.integrations
        client = integrations.connections.get("gw-v1").client  # type: ignore[attr-defined]
        one, two = integrations.get("one"), integrations.get("two")
        assert one is not None and two is not None
        assert one.backend.provider._api.http is client
        assert two.backend.provider._api.http is client
        assert integrations.connections.entry("gw-v1").users == ["one", "two"]
        check = ai.running.servicers["integration.v1.AIService"].model_check
        await check  # the start-up listing of models, one GET /models per service, first
        for target in ("one", "two", "one"):
            answer = await ai.stub.Complete(
                ai_pb2.CompleteRequest(target=target, messages=user("hi"))
            )
            assert answer.content
        assert fake.http.accepted == 1  # one pool: the keep-alive connection was reused
    assert client.is_closed  # closed with the connection, after the services


async def test_the_connection_base_url_and_headers_reach_the_upstream(fake: FakeLLM) -> None:
    text = shared(fake.url) + config(on_connection("claude", provider="anthropic"))
    async with ai_sidecar(text) as ai:
        await ai.stub.Complete(ai_pb2.CompleteRequest(target="claude", messages=user("hi")))
    request = fake.completions[-1].request
    assert request.path.startswith("/v1/messages")
    assert request.headers["x-gateway"] == "shared"


async def test_an_inline_endpoint_makes_a_connection_named_like_the_service(
    fake: FakeLLM,
) -> None:
    async with ai_sidecar(config(model("llm", fake.url))) as ai:
        entry = ai.running.integrations.connections.entry("llm")
        assert entry.implicit and entry.users == ["llm"]
        connection = entry.connection
        assert isinstance(connection, HttpConnection) and not connection.probed
        service = ai.running.integrations.get("llm")
        assert service is not None and service.backend.provider._api.http is connection.client
        await ai.stub.Complete(ai_pb2.CompleteRequest(target="llm", messages=user("hi")))


def test_the_echo_provider_is_on_no_connection() -> None:
    config_ = parse_config("services:\n  echo: {type: ai_model, provider: echo}\n")
    assert config_.connection_of("echo") is None


@pytest.mark.parametrize("health_path", [None, "/v1/models"])
async def test_health_pings_the_connection_with_a_health_path_else_the_provider(
    fake: FakeLLM, health_path: str | None
) -> None:
    # The fake wants the key on every path: the connection's own headers carry it here.
    extra = f", health_path: {health_path}" if health_path else ""
    extra += f", headers: {{authorization: Bearer {API_KEY}}}"
    text = f"connections:\n  gw: {{type: http, base_url: '{fake.url}'{extra}}}\n"
    text += config(on_connection("claude", "anthropic"))
    integrations = build_integrations(parse_config(text))
    assert integrations.connections.get("gw").probed == (health_path is not None)
    monitor = HealthMonitor(
        integrations,
        health.aio.HealthServicer(),
        {},
        check_interval=1.0,
        timeout=2.0,
        consecutive_failures=1,
    )
    try:
        await monitor.check_once()
        claude = integrations.get("claude")
        assert claude is not None and claude.healthy
        pings = [exchange.request for exchange in fake.http.exchanges]
        assert [request.path.split("?")[0] for request in pings] == ["/v1/models"]
        # The provider's ping goes through its SDK (auth, API version); the connection's not.
        assert ("anthropic-version" in pings[0].headers) == (health_path is None)
        await fake.close()
        await monitor.check_once()
        assert not claude.healthy
    finally:
        await integrations.close()
