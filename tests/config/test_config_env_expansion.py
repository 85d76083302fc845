"""`${VAR}` / `${VAR:-default}` / `$$` expansion in string values, with path-named errors."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.config._expand import expand_env


def test_set_variable_is_substituted() -> None:
    config = parse_config(
        "server:\n  listen: ${HOST}:${PORT}\n", environ={"HOST": "0.0.0.0", "PORT": "6000"}
    )
    assert config.server.listen == "0.0.0.0:6000"


def test_default_is_used_when_variable_is_unset_or_empty() -> None:
    text = "server:\n  listen: ${HOST:-127.0.0.1}:${PORT:-7000}\n"
    assert parse_config(text, environ={}).server.listen == "127.0.0.1:7000"
    assert parse_config(text, environ={"PORT": ""}).server.listen == "127.0.0.1:7000"
    assert parse_config(text, environ={"PORT": "7001"}).server.listen == "127.0.0.1:7001"


def test_empty_default_is_allowed() -> None:
    data, problems = expand_env({"a": "x${NOPE:-}y"}, {})
    assert data == {"a": "xy"}
    assert problems == []


def test_expanded_strings_are_converted_to_the_field_type() -> None:
    text = (
        "integration:\n"
        "  retry_policy: {max_retries: '${RETRIES}', base_delay: '${DELAY}', jitter: '${JITTER}'}\n"
        "services:\n  kv: {type: cache, max_value_size: '${SIZE}'}\n"
    )
    env = {"RETRIES": "5", "DELAY": "250ms", "JITTER": "false", "SIZE": "2MiB"}
    config = parse_config(text, environ=env)
    assert config.integration.retry_policy.max_retries == 5
    assert config.integration.retry_policy.base_delay == 0.25
    assert config.integration.retry_policy.jitter is False
    assert config.services["kv"].max_value_size == 2 * 1024 * 1024  # type: ignore[union-attr]


def test_unset_variable_is_an_error_naming_the_config_path() -> None:
    text = "server:\n  auth:\n    tokens: [ok, '${API_TOKEN}']\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={}, source="sidecar.yaml")
    assert caught.value.problems == [
        ("server.auth.tokens[1]", "environment variable API_TOKEN is not set")
    ]
    assert "server.auth.tokens[1]: environment variable API_TOKEN is not set" in str(caught.value)


def test_every_unset_variable_is_reported() -> None:
    _, problems = expand_env({"a": {"b": "${X}-${Y}"}, "c": ["${Z}"]}, {})
    assert problems == [
        ("a.b", "environment variable X is not set"),
        ("a.b", "environment variable Y is not set"),
        ("c[0]", "environment variable Z is not set"),
    ]


def test_double_dollar_is_a_literal_dollar() -> None:
    data, problems = expand_env({"price": "$$5 and $${HOME}", "lone": "a$b"}, {"HOME": "/root"})
    assert data == {"price": "$5 and ${HOME}", "lone": "a$b"}
    assert problems == []


def test_substituted_values_are_not_expanded_again() -> None:
    data, _ = expand_env({"password": "${PW}"}, {"PW": "p$$w${X}rd"})
    assert data == {"password": "p$$w${X}rd"}


def test_keys_and_non_string_values_are_left_alone() -> None:
    document = {"${KEY}": {"n": 5, "f": 1.5, "b": True, "none": None}}
    data, problems = expand_env(document, {"KEY": "expanded"})
    assert data == document
    assert problems == []


@pytest.mark.parametrize("text", ["${UNCLOSED", "${1BAD}", "${}", "${A:default}"])
def test_malformed_reference_is_an_error(text: str) -> None:
    _, problems = expand_env({"v": text}, {"A": "a", "UNCLOSED": "u"})
    assert len(problems) == 1
    path, message = problems[0]
    assert path == "v"
    assert message.startswith("invalid reference")
    assert "${VAR:-default}" in message


def test_os_environ_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TEST_LISTEN", "unix:/tmp/sidecar-test.sock")
    config = parse_config("server:\n  listen: ${SIDECAR_TEST_LISTEN}\n")
    assert config.server.listen == "unix:/tmp/sidecar-test.sock"


def test_unexpanded_value_is_not_reported_twice() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  shutdown_grace: ${GRACE}\n", environ={})
    assert caught.value.problems == [
        ("server.shutdown_grace", "environment variable GRACE is not set")
    ]
