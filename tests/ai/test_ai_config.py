"""The `ai_model` and `ai_alias` service types: the specification's example, defaults,
validation messages by path, and what start-up refuses."""

from __future__ import annotations

import pytest

from sidecar.ai.build import model_service
from sidecar.config import ConfigError, parse_config
from sidecar.runtime.policies import pipeline_options

SPEC_OPENAI = """\
services:
  openai:
    type: ai_model
    endpoint: https://api.openai.com/v1
    auth:
      type: bearer
      token: ${OPENAI_API_KEY}
    rate_limit:
      requests_per_minute: 3500
      tokens_per_minute: 90000
"""


def test_the_specifications_openai_service_is_an_ai_model() -> None:
    config = parse_config(SPEC_OPENAI, environ={"OPENAI_API_KEY": "sk-secret"})
    service = config.services["openai"]
    assert (service.type, service.backend, service.endpoint) == (
        "ai_model",
        "openai",
        "https://api.openai.com/v1",
    )
    assert service.auth.token is not None
    assert service.auth.token.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(service) and "sk-secret" not in str(config.model_dump())
    assert (service.limits.requests_per_minute, service.limits.tokens_per_minute) == (3500, 90000)
    assert (service.defaults.temperature, service.defaults.max_tokens) == (0.7, 2048)
    assert service.default_model == "gpt-4o-mini"


def test_per_minute_limits_do_not_become_a_generic_rate_limit() -> None:
    config = parse_config(SPEC_OPENAI, environ={"OPENAI_API_KEY": "k"})
    assert config.policies_for("openai").rate_limit is None


def test_model_service_takes_timeouts_breaker_and_retry_from_the_policies() -> None:
    text = SPEC_OPENAI + (
        "    timeouts: {request: 5s, read: 7s, connect: 2s}\n"
        "    circuit_breaker: {failure_threshold: 3}\n"
        "    retry_policy: {max_retries: 1}\n"
    )
    config = parse_config(text, environ={"OPENAI_API_KEY": "k"})
    policies = config.policies_for("openai")
    built = model_service(config.services["openai"], policies, pipeline_options(policies))
    assert (built.first_chunk_timeout, built.timeouts.read, built.timeouts.connect) == (5, 7, 2)
    assert built.circuit_breaker is not None and built.circuit_breaker.failure_threshold == 3
    assert built.retry is not None and built.retry.max_retries == 1
    assert built.limits.tokens_per_minute == 90000


def test_an_empty_rate_limit_section_means_no_limits() -> None:
    config = parse_config("services:\n  a:\n    type: ai_model\n    rate_limit:\n", environ={})
    assert config.services["a"].limits.tokens_per_minute is None


def test_alias_deployments_take_the_short_and_the_long_form() -> None:
    text = """\
services:
  openai: {type: ai_model}
  cache: {type: cache}
  chat:
    type: ai_alias
    deployments:
      - openai/gpt-4o
      - {service: openai}
    cache: {ttl: 10m}
"""
    alias = parse_config(text, environ={}).services["chat"]
    assert [(d.service, d.model) for d in alias.deployments] == [
        ("openai", "gpt-4o"),
        ("openai", None),
    ]
    assert alias.cache is not None and (alias.cache.target, alias.cache.ttl) == ("cache", 600)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "services:\n  a: {type: ai_model, rate_limit: {requests_per_minut: 1}}\n",
            "services.a.rate_limit.requests_per_minut",
            "unknown field",
        ),
        (
            "services:\n  a: {type: ai_model, rate_limit: {tokens_per_minute: 0}}\n",
            "services.a.rate_limit.tokens_per_minute",
            "must be > 0",
        ),
        (
            "services:\n  a: {type: ai_model, provider: llama}\n",
            "services.a.provider",
            "must be one of: openai, anthropic, huggingface, echo (got 'llama')",
        ),
        (
            "services:\n  a: {type: ai_model, provider: huggingface}\n",
            "services.a",
            "provider huggingface needs endpoint and model",
        ),
        (
            "services:\n  a: {type: ai_model, defaults: {temperature: 3}}\n",
            "services.a.defaults.temperature",
            "must be <= 2",
        ),
        ("services:\n  c: {type: ai_alias, deployments: []}\n", "services.c.deployments", None),
    ],
)
def test_invalid_ai_settings_are_reported_by_path(
    text: str, path: str, message: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    problems = dict(caught.value.problems)
    assert path in problems
    if message is not None:
        assert problems[path] == message


def test_an_alias_naming_an_unknown_service_is_a_config_error() -> None:
    text = (
        "services:\n  chat: {type: ai_alias, deployments: [nosuch/model]}\n  x: {type: ai_model}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.problems == [
        ("services.chat.deployments[0].service", "'nosuch' is not a configured ai_model service")
    ]


def test_an_alias_caching_on_an_unknown_cache_is_a_config_error() -> None:
    text = (
        "services:\n  x: {type: ai_model, provider: echo}\n"
        "  chat: {type: ai_alias, deployments: [x], cache: {target: nosuch}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.problems == [
        ("services.chat.cache.target", "'nosuch' is not a configured cache service")
    ]


GATEWAY = "connections:\n  gw: {type: http, base_url: 'https://llm.internal/v1'}\n"


@pytest.mark.parametrize(
    ("services", "path", "message"),
    [
        (
            "  a: {type: ai_model, connection: gw, endpoint: 'https://x/v1'}\n",
            "services.a.endpoint",
            "connection 'gw' gives the endpoint (its base_url): set endpoint or connection, "
            "not both",
        ),
        (
            "  a: {type: ai_model, provider: echo, connection: gw}\n",
            "services.a.connection",
            "provider echo talks to no upstream: remove connection",
        ),
        (
            "  a: {type: ai_model, connection: nosuch}\n",
            "services.a.connection",
            "'nosuch' is not a configured http connection (gw)",
        ),
        (
            "  a: {type: ai_model, provider: huggingface, connection: gw}\n",
            "services.a",
            "provider huggingface needs model",
        ),
        (
            "  gw: {type: ai_model, endpoint: 'https://y/v1'}\n",
            "services.gw",
            "'gw' has inline settings, which make a connection named like the service, but "
            "connections: has one of that name; name it with connection:",
        ),
        (
            "  a: {type: ai_model, connection: gw, connection_pool: {max_connections: 5}}\n",
            "services.a.connection_pool",
            "the pool belongs to connection 'gw', shared by its services: set connection_pool "
            "under connections.gw",
        ),
    ],
)
def test_a_service_on_an_http_connection_is_checked_by_path(
    services: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(GATEWAY + "services:\n" + services, environ={})
    assert dict(caught.value.problems).get(path) == message


def test_a_service_on_a_connection_takes_its_endpoint_from_the_base_url() -> None:
    text = GATEWAY + (
        "services:\n"
        "  hf: {type: ai_model, provider: huggingface, connection: gw, model: org/m}\n"
        "  openai: {type: ai_model, connection: gw}\n"
    )
    config = parse_config(text, environ={})
    assert (config.connection_of("hf"), config.connection_of("openai")) == ("gw", "gw")
    assert config.services["openai"].endpoint is None
    # The AI path's pool stays as wide as before (1000) unless the config narrows it.
    assert config.connection_policies("gw")[0].max_connections == 1000
    assert config.policies_for("openai").connection_pool.max_connections == 1000


def test_the_connection_sections_http_settings_are_checked() -> None:
    bad = {
        "connections:\n  gw: {type: http}\n": ("connections.gw.base_url", None),
        "connections:\n  gw: {type: http, base_url: 'ftp://x'}\n": (
            "connections.gw.base_url",
            "must be an http:// or https:// URL with a host",
        ),
        "connections:\n  gw: {type: http, base_url: 'http://x', tls: true}\n": (
            "connections.gw",
            "tls is set but base_url is http://: use an https:// URL",
        ),
        "connections:\n  gw: {type: http, base_url: 'http://x', health_path: health}\n": (
            "connections.gw.health_path",
            None,
        ),
        "connections:\n  gw: {type: http, base_url: 'http://x', headers: {'a b': c}}\n": (
            "connections.gw.headers",
            "not HTTP header names: a b",
        ),
    }
    for text, (path, message) in bad.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(text, environ={})
        problems = dict(caught.value.problems)
        assert path in problems, (text, problems)
        if message is not None:
            assert problems[path] == message


def test_a_budget_on_an_unknown_redis_connection_is_a_config_error() -> None:
    text = (
        "connections:\n  shared: {type: redis, host: 127.0.0.1}\n"
        "services:\n"
        "  x:\n    type: ai_model\n    provider: echo\n"
        "    rate_limit: {tokens_per_minute: 1000, store: redis, connection: nosuch}\n"
        "  chat:\n    type: ai_alias\n    deployments: [x]\n"
        "    rate_limit: {requests_per_minute: 10, store: redis, connection: shared}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.problems == [
        ("services.x.rate_limit.connection", "'nosuch' is not a configured redis connection")
    ]
