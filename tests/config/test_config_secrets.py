"""Secrets never show up in repr, str, logs or serialised config."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_config

TOKEN = "s3cr3t-token-value"


def test_auth_tokens_are_not_in_repr_or_dumps() -> None:
    config = parse_config(
        "server:\n  auth:\n    tokens: ['${TOKEN_A}', '${TOKEN_B}']\n",
        environ={"TOKEN_A": TOKEN, "TOKEN_B": "other-secret"},
    )
    assert config.server.auth.enabled
    assert [t.get_secret_value() for t in config.server.auth.tokens] == [TOKEN, "other-secret"]
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.model_dump())):
        assert TOKEN not in text
        assert "other-secret" not in text


def test_auth_is_off_without_tokens() -> None:
    assert not parse_config("", environ={}).server.auth.enabled


def test_empty_token_is_rejected_without_echoing_tokens() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "server:\n  auth:\n    tokens: ['${A}', '${EMPTY}']\n",
            environ={"A": TOKEN, "EMPTY": ""},
        )
    assert caught.value.problems == [("server.auth.tokens[1]", "must not be empty")]
    assert TOKEN not in str(caught.value)


def test_errors_elsewhere_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "server:\n  log_level: loud\n  auth:\n    tokens: ['${A}']\n", environ={"A": TOKEN}
        )
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.problems)


@pytest.mark.parametrize("service_type", ["cache", "pubsub"])
def test_redis_password_is_not_in_repr_or_dumps(service_type: str) -> None:
    config = parse_config(
        f"services:\n  shared:\n    type: {service_type}\n    backend: redis\n"
        "    password: ${REDIS_PASSWORD}\n",
        environ={"REDIS_PASSWORD": TOKEN},
    )
    service = config.services["shared"]
    assert service.password is not None
    assert service.password.get_secret_value() == TOKEN
    for text in (
        repr(config),
        str(config),
        repr(service),
        config.model_dump_json(),
        repr(config.model_dump()),
    ):
        assert TOKEN not in text


def test_redis_errors_do_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "services:\n  kv: {type: cache, backend: redis, port: 0, password: '${P}'}\n",
            environ={"P": TOKEN},
        )
    assert caught.value.problems == [("services.kv.port", "must be >= 1")]
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.problems)
