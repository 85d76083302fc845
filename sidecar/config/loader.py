"""Load the YAML file into a `Config`, and turn every problem into one readable error.

A sidecar that will not start must say why in terms of the file the operator wrote: every
problem at once (fixing one per restart is slow), each named by its dotted config path, with
no pydantic internals (union tags, "Input should be", URLs) and nothing that looks like a
traceback. `ConfigError` carries the problems as data too, so a CLI or a test can use them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final, NoReturn

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ._expand import expand_env
from ._paths import format_path
from .models import Config
from .secrets import inline_secrets
from .services import SERVICE_TYPES

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_EXPANDED_NODES",
    "MAX_NESTING_DEPTH",
    "MAX_SCALAR_CHARS",
    "ConfigError",
    "load_config",
    "parse_config",
]

# Bounds on what the loader reads. A real config is a few KiB, a dozen levels deep and a few
# hundred values; these leave room for that many times over and stop a hostile or generated
# file before it costs seconds of CPU or gigabytes of memory.
MAX_CONFIG_BYTES: Final = 1024 * 1024
"""Size of the config file at most."""
MAX_NESTING_DEPTH: Final = 64
"""Mappings and lists nested inside each other at most (deeper would exhaust the stack)."""
MAX_EXPANDED_NODES: Final = 100_000
"""Keys and values in the document at most, counting each alias as a copy of what it names
(the bound that stops a "billion laughs" alias bomb)."""
MAX_SCALAR_CHARS: Final = 64 * 1024
"""Characters in one key or value at most."""

# The field a discriminated union reads its tag from; pydantic puts the tag value into error
# locations, and the loader must skip it to get back to the path the user wrote.
_DISCRIMINATOR = "type"
_YAML_TAG = "tag:yaml.org,2002:"
_INT_TAG = _YAML_TAG + "int"


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
        with open(source, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)  # never more, whatever the file holds
    except FileNotFoundError:
        raise ConfigError(source, [("", f"config file not found: {source}")]) from None
    except OSError as error:
        message = f"cannot read config file {source}: {error.strerror or error}"
        raise ConfigError(source, [("", message)]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"config file {source} is not UTF-8 text (byte {error.start})"
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
    if _utf8_size(text) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _Refused as refusal:
        raise ConfigError(source, [refusal.problem(source)]) from None
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
            config._inline_secrets = tuple(inline_secrets(config, document))
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


def _utf8_size(text: str) -> int:
    if len(text) > MAX_CONFIG_BYTES:
        return len(text)  # too large already; spare encoding a huge string
    # A lone surrogate cannot be encoded; the YAML reader names it as an unacceptable character.
    return len(text.encode("utf-8", "surrogatepass"))


def _too_large(source: str) -> ConfigError:
    message = f"config file {source} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB)"
    return ConfigError(source, [("", message)])


class _Refused(Exception):
    """A document the loader will not build, named by the config path of the offending node."""

    def __init__(
        self, segments: Iterable[str | int | None], message: str, at: yaml.Node | yaml.Event
    ) -> None:
        super().__init__(message)
        self.path = format_path(segment for segment in segments if segment is not None)
        mark = at.start_mark
        assert mark is not None  # the pure-Python parser marks every event
        self.message = f"{message} (line {mark.line + 1}, column {mark.column + 1})"

    def problem(self, source: str) -> tuple[str, str]:
        """The `(path, message)` pair; a problem at the root names the file instead."""
        return (self.path, self.message) if self.path else ("", f"{source}: {self.message}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML silently resolves to the last,
    and refuses documents beyond the bounds above while composing them, before any value is
    built or copied: that is where the config path of each node is still known.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # The path to the node being composed; None for a mapping key (it has no path).
        self._segments: list[str | int | None] = []
        self._expanded_nodes = 0
        self._anchored_sizes: dict[yaml.Node, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._segments.append(_segment(index))
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]
        if len(self._segments) > MAX_NESTING_DEPTH:
            self._refuse(f"nested deeper than {MAX_NESTING_DEPTH} levels", event)
        counted_before = self._expanded_nodes
        node = super().compose_node(parent, index)  # type: ignore[arg-type]
        assert node is not None  # composing an event always yields a node
        if isinstance(event, yaml.AliasEvent):
            size = self._anchored_sizes.get(node)
            if size is None:  # the anchor's own node is still open: a cycle
                message = f"alias *{event.anchor} is used inside the value it names"
                self._refuse(message, event)
            self._expanded_nodes += size
        else:
            self._expanded_nodes += 1
            if event.anchor is not None:
                self._anchored_sizes[node] = self._expanded_nodes - counted_before
        if self._expanded_nodes > MAX_EXPANDED_NODES:
            message = f"more than {MAX_EXPANDED_NODES} values once aliases are expanded"
            self._refuse(message, event)
        self._segments.pop()
        return node

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        node = super().compose_scalar_node(anchor)
        if len(node.value) > MAX_SCALAR_CHARS:
            self._refuse(f"value longer than {MAX_SCALAR_CHARS} characters", node)
        if node.tag not in self.yaml_constructors:
            return node  # a merge key, or an unknown tag that construction reports
        # Build it now, where its path is known; construction later reuses the result. PyYAML's
        # scalar constructors raise plain Python errors for what they cannot read (an integer
        # past Python's digit limit, `!!int abc`, `!!bool maybe`).
        try:
            self.construct_object(node)
        except (ValueError, LookupError, AttributeError):
            self._refuse(_unreadable_scalar(node), node)
        return node

    def _refuse(self, message: str, at: yaml.Node | yaml.Event) -> NoReturn:
        raise _Refused(self._segments, message, at)


def _segment(index: object) -> str | int | None:
    """The path segment of a node from the `index` PyYAML composes it under."""
    if isinstance(index, int):
        return index  # a list item
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)  # a mapping value, under its key
    if index is None:
        return None  # the root, or a mapping key
    return "?"  # a value under a complex key (a list or mapping), as YAML writes those keys


def _unreadable_scalar(node: yaml.ScalarNode) -> str:
    digits = sum(character.isdigit() for character in node.value)
    if node.tag == _INT_TAG and digits > sys.get_int_max_str_digits():
        return f"integer too long: {digits} digits, at most {sys.get_int_max_str_digits()}"
    return f"cannot read {_short_repr(node.value)} as {node.tag.replace(_YAML_TAG, '!!')}"


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
