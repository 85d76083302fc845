"""A secret written inline in the config file (rather than as `${VAR}`) is warned about at
start-up, naming its config path; tried with every secret-bearing setting of the schema, and
the schema is walked so that a new secret field fails here until it is added to the file."""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from sidecar.config import Config, load_config, parse_config
from sidecar.config.secrets import secret_settings
from sidecar.testing import serve_for_test

INLINE = Path(__file__).parent / "data" / "inline_secrets.yaml"
CREDENTIAL_MAPS = ("headers", "query")


def referenced(text: str) -> tuple[str, dict[str, str]]:
    """`text` with every inline secret value (`*-inline`, AKIAINLINEEXAMPLE) turned into a
    ${VAR} reference, and the environment those references need."""
    environ: dict[str, str] = {}

    def to_reference(match: re.Match[str]) -> str:
        name = f"SECRET_{len(environ)}"
        environ[name] = match.group(0)
        return "${" + name + "}"

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, str):
            return re.sub(r"[A-Za-z0-9-]*-inline|AKIAINLINEEXAMPLE", to_reference, node)
        return node

    return yaml.safe_dump(walk(yaml.safe_load(text))), environ


def test_every_secret_bearing_setting_written_inline_is_named() -> None:
    config = load_config(INLINE)
    paths = set(config.inline_secrets)
    # Every value in the file that is a secret (they all end in -inline) is found.
    values = {s.dotted: s.value for s in secret_settings(config) if s.dotted in paths}
    assert all("inline" in value.lower() for value in values.values())
    assert len(paths) == INLINE.read_text().count("-inline") + 1  # + the AWS access key id
    assert {
        "connections.pgdsn.dsn",
        "services.kv.password",
        "services.llm.headers.x-api-key",
        "services.rest.query.access_token",
        "connections.aws.credentials.secret_access_key",
        "server.auth.callers.app.token",
    } <= paths


def test_plain_tokens_written_inline_are_named() -> None:
    config = parse_config(
        "server:\n  auth:\n    tokens: [plain-token-inline, '${T}']\n", {"T": "x"}
    )
    assert config.inline_secrets == ("server.auth.tokens[0]",)


def test_secrets_written_as_references_are_not_named() -> None:
    text, environ = referenced(INLINE.read_text())
    config = parse_config(text, environ)
    assert config.inline_secrets == ()
    assert len(secret_settings(config)) >= len(environ)


def test_a_reference_with_an_inline_default_counts_as_a_reference() -> None:
    text = "services:\n  kv: {type: cache, backend: redis, password: '${P:-fallback-pw}'}\n"
    assert parse_config(text, {}).inline_secrets == ()


def test_non_secret_headers_are_not_named() -> None:
    text = (
        "connections:\n  api: {type: http, base_url: 'http://127.0.0.1:9', "
        "headers: {x-team: search, Accept: application/json}}\n"
    )
    assert parse_config(text, {}).inline_secrets == ()


async def test_the_server_warns_at_start_up_naming_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config("server:\n  auth:\n    tokens: [start-up-token-inline]\n", {})
    with caplog.at_level(logging.WARNING, logger="sidecar.server"):
        async with serve_for_test(config):
            pass
    warnings = [r for r in caplog.records if "inline" in r.getMessage()]
    assert [getattr(r, "config_path", None) for r in warnings] == ["server.auth.tokens[0]"]
    assert all("start-up-token-inline" not in r.getMessage() for r in caplog.records)


# -- the file covers the schema ------------------------------------------------------------


def schema_secret_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[str]:
    """`Class.field` of every secret-bearing field reachable from `model`."""
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        if "SecretStr" in repr(field.annotation) or name in CREDENTIAL_MAPS:
            yield f"{model.__name__}.{name}"
        for inner in nested_models(field.annotation):
            yield from schema_secret_fields(inner, seen)


def nested_models(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for argument in typing.get_args(annotation):
        yield from nested_models(argument)


def set_secret_fields(node: object) -> Iterator[str]:
    """`Class.field` of every secret-bearing field set in a config instance."""
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value = getattr(node, name)
            secrets = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, SecretStr) for v in secrets) or (
                name in CREDENTIAL_MAPS and value
            ):
                yield f"{type(node).__name__}.{name}"
            yield from set_secret_fields(value)
    elif isinstance(node, typing.Mapping):
        for value in node.values():
            yield from set_secret_fields(value)
    elif isinstance(node, tuple):
        for value in node:
            yield from set_secret_fields(value)


def test_the_file_sets_every_secret_bearing_field_of_the_schema() -> None:
    covered = set(set_secret_fields(load_config(INLINE)))
    covered |= set(set_secret_fields(parse_config("server: {auth: {tokens: [x-inline]}}", {})))
    assert set(schema_secret_fields(Config, set())) - covered == set()
