"""The `api` service settings: inline or on a named http connection, the auth kinds, secrets
kept out of reprs and dumps, and clear refusals."""

from __future__ import annotations

import json

import pytest
from api.helpers import http_service, request
from api.upstream import Upstream

from sidecar.config import ConfigError, parse_config
from sidecar.config.services.api import ApiServiceConfig, OAuth2ClientCredentials


def load(services: str, connections: str = "") -> object:
    return parse_config(f"{connections}\nservices:\n{services}")


def test_inline_settings_make_a_connection_of_the_service() -> None:
    config = parse_config(
        "services:\n  billing: {type: api, base_url: 'https://b.example/api', http2: true}\n"
    )
    service = config.services["billing"]
    assert isinstance(service, ApiServiceConfig)
    assert config.connection_of("billing") == "billing"
    assert (service.backend, service.follow_redirects, service.max_response_bytes) == (
        "http",
        False,
        10 * 1024 * 1024,
    )


def test_secrets_come_from_the_environment_and_stay_hidden() -> None:
    config = parse_config(
        "services:\n"
        "  b:\n"
        "    type: api\n"
        "    base_url: https://b.example\n"
        "    auth: {type: oauth2_client_credentials, token_url: 'https://auth.example/t',\n"
        "           client_id: c, client_secret: '${API_SECRET}'}\n",
        environ={"API_SECRET": "s3cr3t-value"},
    )
    auth = config.services["b"].auth  # type: ignore[union-attr]
    assert isinstance(auth, OAuth2ClientCredentials)
    assert auth.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(config)
    assert "s3cr3t-value" not in json.dumps(config.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ("{type: api}", "set base_url"),
        ("{type: api, base_url: 'ftp://x'}", "http:// or https://"),
        ("{type: api, connection: gw, base_url: 'https://x'}", "belong to connection"),
        ("{type: api, base_url: 'https://x', auth: {type: magic}}", "magic"),
        ("{type: api, base_url: 'https://x', auth: {type: bearer, token: ''}}", "not be empty"),
        (
            "{type: api, base_url: 'https://x', auth: {type: api_key, key: k, header: X-K, "
            "query_parameter: k}}",
            "not both",
        ),
        (
            "{type: api, base_url: 'https://x', auth: {type: basic, username: 'a:b', password: p}}",
            "':'",
        ),
        (
            "{type: api, base_url: 'https://x', auth: {type: oauth2_client_credentials, "
            "token_url: 'file:///etc/passwd', client_id: c, client_secret: s}}",
            "http:// or https://",
        ),
        ("{type: api, base_url: 'https://x', headers: {'X-A': \"a\\r\\nb\"}}", "line break"),
        ("{type: api, base_url: 'https://x', max_response_bytes: 2GiB}", "max_response_bytes"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(service: str, problem: str) -> None:
    connections = "connections:\n  gw: {type: http, base_url: 'https://gw.example'}"
    with pytest.raises(ConfigError, match=problem):
        load(f"  svc: {service}", connections)


async def test_a_service_on_a_named_http_connection(upstream: Upstream) -> None:
    config = (
        "connections:\n"
        f"  gateway: {{type: http, base_url: '{upstream.url}/echo', headers: {{X-Conn: c}}}}\n"
        "services:\n"
        "  one: {type: api, connection: gateway, headers: {X-Svc: one}}\n"
        "  two: {type: api, connection: gateway, auth: {type: bearer, token: t2}}\n"
    )
    async with http_service(config) as stub:
        one = json.loads((await stub.Call(request(target="one", path="a"))).body)
        two = json.loads((await stub.Call(request(target="two", path="b"))).body)
    assert (one["path"], two["path"]) == ("/echo/a", "/echo/b")
    assert one["headers"]["x-conn"] == "c" and one["headers"]["x-svc"] == "one"
    assert "authorization" not in one["headers"]
    assert two["headers"]["authorization"] == "Bearer t2"


def test_every_default() -> None:
    service = ApiServiceConfig(base_url="https://x.example")
    assert (service.auth.type, dict(service.headers), dict(service.query)) == ("none", {}, {})
    assert (service.follow_redirects, service.max_redirects) == (False, 5)
    assert (service.max_request_bytes, service.max_response_bytes) == (10 * 2**20, 10 * 2**20)
    assert (service.http2, service.health_path, service.connection) == (False, None, None)
    auth = OAuth2ClientCredentials.model_validate(
        {
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example/token",
            "client_id": "c",
            "client_secret": "s",
        }
    )
    assert (auth.scope, auth.audience, auth.client_auth) == (None, None, "basic")
    assert (auth.refresh_before, auth.default_expires_in, auth.timeout) == (60.0, 3600.0, 10.0)
    assert not auth.tls.enabled
