"""Every problem in a config comes back at once, named by path, in plain words."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from sidecar.config import SERVICE_TYPES, ConfigError, load_config, parse_config

EXPECTED_TYPES = f"(expected one of: {', '.join(SERVICE_TYPES)})"

MANY_PROBLEMS = """\
server:
  listen: localhost
  compression: zstd
  auth:
    tokens: ["${SIDECAR_TOKEN}"]
integration:
  retry_policy:
    base_delay: soon
    backoff_multiplier: 0.5
  circuit_breaker:
    failure_ratio: 1.5
  bulkhead:
    max_concurent_calls: 5
services:
  cache:
    type: cache
    max_keys: 0
  redis:
    type: cachez
  Bad_Name:
    type: pubsub
  events:
    backend: memory
"""


def _problems(text: str, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={} if environ is None else environ)
    return caught.value.problems


def test_wrong_config_reports_every_problem_by_path_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MANY_PROBLEMS, environ={}, source="sidecar.yaml")
    error = caught.value
    assert error.source == "sidecar.yaml"
    assert error.problems == [
        (
            "server.listen",
            "invalid listen address 'localhost': use host:port (e.g. 127.0.0.1:50051) "
            "or unix:/path (e.g. unix:/run/sidecar.sock)",
        ),
        ("server.compression", "must be one of: none, gzip (got 'zstd')"),
        ("server.auth.tokens[0]", "environment variable SIDECAR_TOKEN is not set"),
        (
            "integration.retry_policy.base_delay",
            "invalid duration 'soon': use a number with ms, s, m, h or d",
        ),
        ("integration.retry_policy.backoff_multiplier", "must be >= 1"),
        ("integration.circuit_breaker.failure_ratio", "must be <= 1"),
        ("integration.bulkhead.max_concurent_calls", "unknown field"),
        ("services.cache.max_keys", "must be >= 1"),
        ("services.redis.type", f"unknown service type 'cachez' {EXPECTED_TYPES}"),
        (
            "services.Bad_Name",
            "invalid service name 'Bad_Name': use 1-63 lowercase letters, digits, '_' or '-', "
            "starting with a letter",
        ),
        ("services.events.type", f"required field is missing {EXPECTED_TYPES}"),
    ]
    text = str(error)
    assert text.splitlines()[0] == "invalid configuration in sidecar.yaml:"
    assert text.splitlines()[1:] == [f"  {path}: {message}" for path, message in error.problems]


def test_error_text_has_no_pydantic_internals_or_traceback() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MANY_PROBLEMS, environ={})
    text = str(caught.value)
    for noise in (
        "Traceback",
        'File "',
        "Input should",
        "validation error",
        "pydantic",
        "[type=",
        "errors.pydantic.dev",
        "Value error",
        "cachez.",
        "[key]",
        "union",
    ):
        assert noise not in text
    printed = "".join(traceback.format_exception(caught.value))
    assert "ValidationError" not in printed
    assert "During handling" not in printed
    assert "direct cause" not in printed


def test_unknown_field_reads_unknown_field() -> None:
    assert _problems("server:\n  listne: 127.0.0.1:1\nextra: 1\n") == [
        ("server.listne", "unknown field"),
        ("extra", "unknown field"),
    ]


def test_field_named_like_the_service_type_is_still_found() -> None:
    # pydantic puts the union tag ("cache") into error locations; it must not eat a real key.
    assert _problems("services:\n  c: {type: cache, cache: 1}\n") == [
        ("services.c.cache", "unknown field")
    ]


def test_wrong_scalar_types_are_named_plainly() -> None:
    assert _problems(
        "server:\n  reflection: maybe\n  keepalive: [1]\n"
        "services:\n  kv: {type: cache, max_keys: lots}\n  ps: nope\n"
    ) == [
        ("server.reflection", "must be true or false"),
        ("server.keepalive", "must be a mapping"),
        ("services.kv.max_keys", "must be a whole number"),
        ("services.ps", "must be a mapping"),
    ]


def test_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  listen: 127.0.0.1:1\n  bad: [1, 2\n", environ={}, source="s.yaml")
    [(path, message)] = caught.value.problems
    assert path == ""
    assert message.startswith("invalid YAML in s.yaml at line 4, column 1:")
    assert str(caught.value) == message


def test_yaml_indentation_error_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  listen: a\n   reflection: true\n", environ={}, source="s.yaml")
    assert "at line 3, column 14" in str(caught.value)


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  listen: a:1\n  listen: b:2\n", environ={}, source="s.yaml")
    assert "line 3" in str(caught.value)
    assert "found duplicate key 'listen' (first at line 2)" in str(caught.value)


def test_yaml_merge_keys_may_override_merged_values() -> None:
    config = parse_config(
        "services:\n  a: &base {type: cache, max_keys: 5}\n  b:\n    <<: *base\n    max_keys: 9\n",
        environ={},
    )
    assert config.services["a"].max_keys == 5  # type: ignore[union-attr]
    assert config.services["b"].max_keys == 9  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a single")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    [(path, message)] = _problems(text)
    assert path == ""
    assert "the top level must be a mapping" in message
    assert kind in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"config file not found: {path}"
    assert caught.value.problems == [("", f"config file not found: {path}")]


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("server:\n  log_level: loud\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == (
        f"invalid configuration in {path}:\n"
        "  server.log_level: must be one of: debug, info, warning, error (got 'loud')"
    )


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("server:\n  listen: ${ADDR}\n")
    config = load_config(str(path), environ={"ADDR": "0.0.0.0:6000"})
    assert config.server.listen == "0.0.0.0:6000"


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, environ={})


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_bytes(b"server:\n  listen: \xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, environ={})
