"""Every secret-bearing setting of a configuration, found in one place, for two uses: warning
about secrets written inline in the file (rather than as `${VAR}`), and telling the log
redaction which values must never appear in a line.

A setting is secret-bearing when it is:

- typed `SecretStr` (passwords, tokens, API keys, AWS secret keys, OAuth client secrets,
  DSNs): the marker a new secret field gets, and then is covered here without more code;
- a header or query parameter whose name says credential (`Authorization`, `X-API-Key`,
  `api-key`, `Cookie`, anything with token, secret, password or auth in it);
- a URL or DSN string with a password in it (`amqp://user:password@host`).

Usage:

    for setting in secret_settings(config):        # path, value, and the password alone
        ...
    inline = inline_secrets(config, document)      # ["services.cache.password", ...]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from ._paths import format_path

__all__ = ["SecretSetting", "inline_secrets", "is_secret_name", "secret_settings"]

_SECRET_NAME = re.compile(
    r"auth|token|secret|passw|pwd|api[-_]?key|cookie|credential|signature|session", re.I
)
_CREDENTIAL_MAPS = frozenset({"headers", "query"})
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", re.I)

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class SecretSetting:
    """One secret-bearing setting: where it is, its value, and the parts of the value that
    are secret on their own (the password inside a DSN), for redaction."""

    path: Path
    value: str
    parts: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        """The config path as errors write it (`services.cache.password`)."""
        return format_path(list(self.path))


def is_secret_name(name: str) -> bool:
    """Whether a header, parameter or key named `name` carries a credential."""
    return bool(_SECRET_NAME.search(name))


def secret_settings(config: BaseModel) -> list[SecretSetting]:
    """Every secret-bearing setting of `config` (a validated config model) with a value."""
    return list(_walk(config, ()))


def inline_secrets(config: BaseModel, document: object) -> list[str]:
    """Paths of the secret-bearing settings whose value the file wrote inline, not as a
    `${VAR}` reference (a `${VAR:-default}` counts as a reference).

    Args:
        config: the validated configuration.
        document: the YAML document as read, before `${VAR}` expansion.
    """
    inline = []
    for setting in secret_settings(config):
        raw = _lookup(document, setting.path)
        if isinstance(raw, str) and raw and not _REFERENCE.search(raw):
            inline.append(setting.dotted)
    return inline


def _walk(node: object, path: Path) -> Iterator[SecretSetting]:
    if isinstance(node, SecretStr):
        value = node.get_secret_value()
        if value:
            yield SecretSetting(path, value, _embedded_passwords(value))
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value = getattr(node, name)
            if name in _CREDENTIAL_MAPS and isinstance(value, Mapping):
                yield from _credential_entries(value, (*path, name))
            else:
                yield from _walk(value, (*path, name))
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, tuple | list):
        for index, item in enumerate(node):
            yield from _walk(item, (*path, index))
    elif isinstance(node, str) and "@" in node:
        passwords = _embedded_passwords(node)
        if passwords:
            yield SecretSetting(path, node, passwords)


def _credential_entries(values: Mapping[Any, Any], path: Path) -> Iterator[SecretSetting]:
    for key, value in values.items():
        if isinstance(value, str) and value and is_secret_name(str(key)):
            yield SecretSetting((*path, str(key)), value, _credential_parts(value))
        else:
            yield from _walk(value, (*path, str(key)))


def _credential_parts(value: str) -> tuple[str, ...]:
    """`Bearer abc` holds the secret `abc` on its own too."""
    scheme, _, credential = value.partition(" ")
    return (credential.strip(),) if scheme.isalpha() and credential.strip() else ()


def _embedded_passwords(value: str) -> tuple[str, ...]:
    """The password of a URL (`scheme://user:password@host`) or of a keyword DSN
    (`host=db password=secret`), if it has one."""
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        return (password,) if password else ()
    match = _KEYWORD_PASSWORD.search(value)
    if match is None:
        return ()
    password = match.group(1) if match.group(1) is not None else match.group(2)
    return (password,) if password else ()


def _lookup(document: object, path: Path) -> object:
    node = document
    for segment in path:
        if isinstance(node, Mapping):
            if segment not in node:
                return None
            node = node[segment]
        elif isinstance(node, list) and isinstance(segment, int) and segment < len(node):
            node = node[segment]
        else:
            return None
    return node
