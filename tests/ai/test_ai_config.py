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
