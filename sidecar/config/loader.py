"""Load the YAML file into a `Config`, and turn every problem into one readable error.

A sidecar that will not start must say why in terms of the file the operator wrote: every
problem at once (fixing one per restart is slow), each named by its dotted config path, with
no pydantic internals (union tags, "Input should be", URLs) and nothing that looks like a
traceback. `ConfigError` carries the problems as data too, so a CLI or a test can use them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ._expand import expand_env
from ._paths import format_path
from .models import Config
from .services import SERVICE_TYPES

__all__ = ["ConfigError", "load_config", "parse_config"]

# The field a discriminated union reads its tag from; pydantic puts the tag value into error
# locations, and the loader must skip it to get back to the path the user wrote.
_DISCRIMINATOR = "type"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason.

    Attributes:
        source: the file name (or `<string>`) the configuration came from.
        problems: `(path, message)` pairs; `path` is dotted (`services.cache.max_keys`) and
            empty for problems with the file as a whole (missing, not YAML).
    """

    def __init__(self, source: str, problems: Iterable[tuple[str, str]]) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1 and not self.problems[0][0]:
            return self.problems[0][1]  # a whole-file problem already names the file
        lines = [f"invalid configuration in {self.source}:"]
        lines += [
            f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems
        ]
        return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, expand and validate a config file.

    Args:
        path: the YAML file, or None for the embedded defaults (in-memory cache and pubsub on
            127.0.0.1:50051), so the sidecar runs on a bare machine.
        environ: where `${VAR}` references are looked up; None means `os.environ`.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a valid configuration.
    """
    if path is None:
        return Config()
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [("", f"config file not found: {source}")]) from None
    except UnicodeDecodeError as error:
        message = f"config file {source} is not UTF-8 text (byte {error.start})"
        raise ConfigError(source, [("", message)]) from None
    except OSError as error:
        message = f"cannot read config file {source}: {error.strerror or error}"
        raise ConfigError(source, [("", message)]) from None
    return parse_config(text, environ, source=source)


def parse_config(
    text: str, environ: Mapping[str, str] | None = None, source: str = "<string>"
) -> Config:
    """Parse YAML text into a `Config`; an empty document means all defaults.

    Args:
        text: the YAML document.
        environ: where `${VAR}` references are looked up; None means `os.environ`.
        source: how error messages name the document (usually the file path).

    Raises:
        ConfigError: with every problem found, env-var and validation problems together.
    """
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(source, [("", _yaml_message(error, source))]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        message = (
            f"{source}: the top level must be a mapping of sections "
            f"(server, integration, services), not {_kind(document)}"
        )
        raise ConfigError(source, [("", message)])

    data, expansion_problems = expand_env(document, os.environ if environ is None else environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        validation_errors = error.errors()
    else:
        if not expansion_problems:
            return config
        validation_errors = []

    # Report problems in the order the file reads, so it can be fixed top to bottom.
    position = _document_positions(data)
    ranked = [(position.get(path, 0), path, message) for path, message in expansion_problems]
    unexpanded = {path for path, _ in expansion_problems}
    for detail in validation_errors:
        segments, message = _describe(detail, data)
        path = format_path(segments)
        # A value whose ${VAR} could not be expanded fails validation too; say it once.
        if path in unexpanded and detail["type"] != "extra_forbidden":
            continue
        # A missing field is not in the file: rank it with its nearest enclosing section.
        rank = next(
            position[prefix]
            for n in range(len(segments), -1, -1)
            if (prefix := format_path(segments[:n])) in position
        )
        ranked.append((rank, path, message))
    ranked.sort(key=lambda item: item[0])
    problems: list[tuple[str, str]] = []
    for _, path, message in ranked:
        if (path, message) not in problems:
            problems.append((path, message))
    raise ConfigError(source, problems)


def _document_positions(data: object) -> dict[str, int]:
    """Map the path of every node in the document to its place in reading order."""
    position: dict[str, int] = {}

    def visit(node: object, segments: list[str | int]) -> None:
        position.setdefault(format_path(segments), len(position))
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, [*segments, key if isinstance(key, str) else str(key)])
        elif isinstance(node, list):
            for index, item in enumerate(node):
                visit(item, [*segments, index])

    visit(data, [])
    return position


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML silently resolves to the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` then overriding a key is the point of merge keys
        key = loader.construct_object(key_node)
        try:
            seen = first_line.get(key)
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first at line {seen})",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_message(error: yaml.YAMLError, source: str) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        message = (
            f"invalid YAML in {source} at line {mark.line + 1}, column {mark.column + 1}: "
            f"{error.problem}"
        )
        if error.context and error.context_mark is not None:
            message += f" ({error.context} at line {error.context_mark.line + 1})"
        return message
    return f"invalid YAML in {source}: {error}"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return f"a single value ({type(value).__name__})"


# --------------------------------------------------------------------------------------------
# pydantic errors -> (path, message)
# --------------------------------------------------------------------------------------------

_COMPARISONS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
}


def _describe(detail: ErrorDetails, data: object) -> tuple[list[str | int], str]:
    """Translate one pydantic error into the path the user wrote (as segments) and a message."""
    kind = detail["type"]
    ctx: dict[str, Any] = dict(detail.get("ctx") or {})
    path = _user_path(data, detail["loc"])

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", _DISCRIMINATOR)).strip("'\"")
        is_service = len(path) == 2 and path[0] == "services"
        expected = (
            _quoted_words(str(ctx["expected_tags"]))
            if "expected_tags" in ctx
            else (list(SERVICE_TYPES) if is_service else [])
        )
        one_of = f" (expected one of: {', '.join(expected)})" if expected else ""
        where = [*path, field]
        if kind == "union_tag_not_found":
            return where, f"required field is missing{one_of}"
        what = f"service {field}" if is_service else field
        return where, f"unknown {what} {ctx.get('tag')!r}{one_of}"

    where = path
    if kind in _PLAIN_MESSAGES:
        return where, _PLAIN_MESSAGES[kind]
    if kind in _COMPARISONS:
        operator, key = _COMPARISONS[kind]
        return where, f"must be {operator} {_number(ctx.get(key))}"
    if kind == "literal_error":
        options = ", ".join(_quoted_words(str(ctx.get("expected", ""))))
        return where, f"must be one of: {options} (got {_short_repr(detail['input'])})"

    message = detail["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return where, message


def _user_path(data: object, loc: tuple[int | str, ...]) -> list[str | int]:
    """Follow a pydantic error location through the data, keeping only real keys and indexes.

    pydantic inserts segments the user never wrote: the tag of a discriminated union
    (`services.redis.cache.port`) and `[key]` for an invalid mapping key. The tag is the value
    of the node's `type` key and comes right after the node, so it is skipped once there.
    """
    path: list[str | int] = []
    node: object = data
    tag_skipped_at: int | None = None
    for segment in loc:
        if segment == "[key]":
            continue
        if isinstance(node, dict):
            if node.get(_DISCRIMINATOR) == segment and tag_skipped_at != id(node):
                tag_skipped_at = id(node)
                continue
            if segment in node:
                path.append(segment if isinstance(segment, str) else str(segment))
                node = node[segment]
                continue
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            path.append(segment)
            node = node[segment]
            continue
        path.append(segment)
        node = None
    return path


def _number(value: object) -> object:
    """`0.0` reads as `0` in a message; the bound of a float field is a float even when whole."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _quoted_words(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
