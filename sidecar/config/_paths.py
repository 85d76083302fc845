"""Dotted config paths, the one way every error message names a place in the YAML.

Env-expansion problems and validation problems are reported side by side, so both must spell a
location the same way: `services.redis.port`, `server.auth.tokens[0]`, and keys that are not
plain words (method names, `*`) in brackets: `server.inbound_rate_limits["*"]`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

__all__ = ["format_path"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(segments: Iterable[str | int]) -> str:
    """Render path segments as `a.b[0].c`.

    Args:
        segments: mapping keys (str) and list indexes (int), outermost first.

    Returns:
        The dotted path; an empty string for the document root.
    """
    out = ""
    for segment in segments:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            out += f".{segment}" if out else segment
        else:
            out += f"[{json.dumps(segment)}]"
    return out
