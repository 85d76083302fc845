"""Opaque, validated ListObjects page tokens for backends that page by "the last entry
returned" (the local folder). A token carries that entry and a digest of the prefix and
delimiter it was made for, so a token reused with another listing, or forged, is refused
with INVALID_ARGUMENT instead of silently listing something else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from sidecar.errors import InvalidArgument

__all__ = ["decode_page_token", "encode_page_token"]


def _scope(prefix: str, delimiter: str) -> str:
    return hashlib.sha256(f"{prefix}\x00{delimiter}".encode()).hexdigest()[:16]


def encode_page_token(after: str, prefix: str, delimiter: str) -> str:
    """The token resuming a listing after the entry `after`; "" when `after` is "" (the last
    page)."""
    if not after:
        return ""
    raw = json.dumps({"a": after, "s": _scope(prefix, delimiter)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, prefix: str, delimiter: str) -> str:
    """The entry a token resumes after ("" for no token); InvalidArgument (INVALID_REQUEST,
    field page_token) for a token not made by `encode_page_token` for this prefix and
    delimiter."""
    if not token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after, scope = data["a"], data["s"]
        if not isinstance(after, str) or not after or scope != _scope(prefix, delimiter):
            raise ValueError("not ours")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument(
            "page_token is not a token of this listing (same prefix and delimiter)",
            reason="INVALID_REQUEST",
            metadata={"field": "page_token"},
        ) from None
    return after
