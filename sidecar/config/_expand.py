"""`${VAR}` / `${VAR:-default}` expansion in the string values of a parsed YAML document.

Secrets reach the sidecar only through the environment, so the config file can be committed and
templated by Helm without ever holding a token. Expansion runs on the parsed document rather
than on the raw text: a value can then never break YAML syntax or inject extra keys, whatever
characters a password holds, and every problem can be named by its config path.

Rules (the subset of POSIX shell / Docker Compose people already know):

- `${VAR}` is the value of VAR; an unset VAR is an error naming the config path.
- `${VAR:-default}` is the value of VAR, or `default` when VAR is unset or empty.
- `$$` is a literal `$`; any other `$` is kept as it is.
- Only string values are expanded, never mapping keys, and substituted text is not expanded
  again, so a secret that contains `$` arrives intact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._paths import format_path

__all__ = ["ExpansionProblem", "expand_env"]

# One alternation, scanned left to right: `$$`, a well-formed reference, or a malformed `${`.
_TOKEN = re.compile(
    r"""
    \$\$
    | \$\{ (?P<name>[A-Za-z_][A-Za-z0-9_]*) (?: :- (?P<default>[^}]*) )? \}
    | (?P<bad>\$\{ [^}]* \}? )
    """,
    re.VERBOSE,
)

ExpansionProblem = tuple[str, str]
"""A `(config path, message)` pair, the same shape the loader reports validation errors in."""


def expand_env(data: object, environ: Mapping[str, str]) -> tuple[object, list[ExpansionProblem]]:
    """Expand environment references in every string value of `data`.

    Args:
        data: the document as `yaml.safe_load` returns it (dicts, lists, scalars).
        environ: where variables are looked up; injectable so tests never touch `os.environ`.

    Returns:
        A new document with references replaced, and every problem found (all of them, so the
        user fixes the file in one go). A string with a problem is kept unexpanded, so the
        validator still sees a value there and the loader can hide its knock-on errors.
    """
    problems: list[ExpansionProblem] = []
    return _walk(data, [], environ, problems), problems


def _walk(
    node: object,
    path: list[str | int],
    environ: Mapping[str, str],
    problems: list[ExpansionProblem],
) -> object:
    if isinstance(node, str):
        return _expand_string(node, path, environ, problems)
    if isinstance(node, dict):
        return {
            key: _walk(value, [*path, key if isinstance(key, str) else str(key)], environ, problems)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_walk(item, [*path, i], environ, problems) for i, item in enumerate(node)]
    return node


def _expand_string(
    text: str,
    path: list[str | int],
    environ: Mapping[str, str],
    problems: list[ExpansionProblem],
) -> str:
    if "$" not in text:
        return text
    found: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group("bad") is not None:
            found.append(
                f"invalid reference {match.group('bad')!r}: "
                "use ${VAR} or ${VAR:-default}, and $$ for a literal $"
            )
            return match.group(0)
        name = match.group("name")
        if name is None:  # `$$`
            return "$"
        value = environ.get(name)
        default = match.group("default")
        if default is not None and not value:
            return default
        if value is None:
            found.append(f"environment variable {name} is not set")
            return match.group(0)
        return value

    expanded = _TOKEN.sub(substitute, text)
    if found:
        where = format_path(path)
        problems.extend((where, message) for message in found)
        return text
    return expanded
