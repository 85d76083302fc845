"""JSON <-> botocore values, by the operation's shapes: the parameters of an AwsService call
arrive as JSON (a Struct, in gRPC) and botocore wants Python values of each member's type;
its answers hold bytes and datetimes that JSON has no form for.

    shape type          JSON in                              JSON out
    string              string                               string
    boolean             bool                                 bool
    integer, long       integral number; a long may be a     number; beyond 2^53 a string
                        string of digits                     of digits (a double would round)
    float, double       number                               number
    blob                base64 string                        base64 string
    timestamp           ISO 8601 string, or epoch seconds    ISO 8601 string, UTC ("Z")
    structure, map      object                               object
    list                array                                array
    document            any JSON                             any JSON

`to_botocore` walks the input shape so that every mistake names the member's path
("parameters.Item.pk.S"); botocore's own `validate_parameters` then checks what the walk
does not (lengths, ranges, unions), before anything is sent. `to_json` walks the answer by
value type (botocore already parsed it by shape) within a byte budget, so an answer too
large for a gRPC message is refused before it is built.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import difflib
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from sidecar.errors import InvalidArgument, ResourceExhausted

if TYPE_CHECKING:
    from botocore.model import Shape

__all__ = [
    "LARGE_BYTES",
    "MAX_SAFE_INTEGER",
    "TooLarge",
    "member_path",
    "sized_json",
    "to_botocore",
    "to_json",
]

LARGE_BYTES: Final = 256 * 1024
"""From this size on, a conversion walks in a worker thread rather than on the event loop
(about 2-4 us a value: a 3.5 MB DynamoDB answer of 32000 values takes 40-70 ms)."""

MAX_SAFE_INTEGER: Final = 2**53
"""The largest integer a JSON (Struct, double) number holds exactly."""

_SIMPLE_KEY = re.compile(r"\A[A-Za-z0-9_\-]{1,64}\Z")
_DIGITS = re.compile(r"\A-?[0-9]{1,20}\Z")
_SCALAR_BYTES = 8
"""What a number, bool or null is counted as in the byte budget of an answer."""


def member_path(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` for a key that is not a plain name (a map key with
    dots or spaces), so a path always reads back unambiguously."""
    if _SIMPLE_KEY.match(key):
        return f"{path}.{key}"
    return f"{path}[{key[:64]!r}]"


def _bad(path: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {message}", reason="INVALID_REQUEST", metadata={"field": path})


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- JSON -> botocore -------------------------------------------------------------------------


def to_botocore(value: Any, shape: Shape, path: str) -> Any:
    """`value` (JSON) as the Python value botocore wants for `shape`.

    Raises:
        InvalidArgument: a wrong type, an unknown or missing member, bad base64, a bad
            timestamp; `field` in its metadata is the member's path under `path`.
    """
    kind = shape.type_name
    if kind == "structure":
        return _structure(value, shape, path)
    if kind == "list":
        if not isinstance(value, list):
            raise _bad(path, f"must be an array, not {_kind(value)}")
        member = shape.member  # type: ignore[attr-defined]
        return [to_botocore(item, member, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _bad(path, f"must be an object, not {_kind(value)}")
        item_shape = shape.value  # type: ignore[attr-defined]
        return {
            key: to_botocore(item, item_shape, member_path(path, key))
            for key, item in value.items()
        }
    if kind == "document":
        return _document(value)
    if value is None:
        raise _bad(path, f"must be {_expected(kind)}, not null")
    return _scalar(value, kind, path)


def _structure(value: Any, shape: Shape, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, f"must be an object, not {_kind(value)}")
    members: Mapping[str, Shape] = shape.members  # type: ignore[attr-defined]
    result: dict[str, Any] = {}
    for key, item in value.items():
        member = members.get(key)
        if member is None:
            raise _bad(member_path(path, key), _unknown_member(key, members))
        if item is not None:  # null: the member is absent
            result[key] = to_botocore(item, member, member_path(path, key))
    for name in shape.required_members:
        if name not in result:
            raise _bad(member_path(path, name), "is required")
    return result


def _unknown_member(key: str, members: Mapping[str, Shape]) -> str:
    names = list(members)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    if close:
        return f"unknown member; did you mean {', '.join(close)}?"
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f"unknown member; the members are {shown or 'none'}"


def _expected(kind: str) -> str:
    return {
        "string": "a string",
        "boolean": "a bool",
        "integer": "an integral number",
        "long": "an integral number",
        "float": "a number",
        "double": "a number",
        "blob": "a base64 string",
        "timestamp": "an ISO 8601 string",
    }.get(kind, kind)


def _scalar(value: Any, kind: str, path: str) -> Any:
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
    elif kind in ("integer", "long"):
        return _integer(value, kind, path)
    elif kind in ("float", "double"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "blob":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(path, "is not valid base64 (standard alphabet, padded)") from None
    elif kind == "timestamp":
        return _timestamp(value, path)
    else:  # a shape type botocore added after this was written: let botocore judge it
        return value
    raise _bad(path, f"must be {_expected(kind)}, not {_kind(value)}")


def _integer(value: Any, kind: str, path: str) -> int:
    if isinstance(value, bool):
        raise _bad(path, f"must be an integral number, not {_kind(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise _bad(path, f"must be an integral number, not {value!r}")
        if abs(value) > MAX_SAFE_INTEGER:
            raise _bad(path, "is beyond 2^53: send it as a string of digits")
        return int(value)
    if isinstance(value, str) and kind == "long" and _DIGITS.match(value):
        return int(value)
    raise _bad(path, f"must be an integral number, not {_kind(value)}")


def _timestamp(value: Any, path: str) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _bad(path, "must be a finite number of seconds")
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise _bad(path, "is out of range") from None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _bad(path, f"{value[:64]!r} is not an ISO 8601 timestamp") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    raise _bad(path, f"must be an ISO 8601 string, not {_kind(value)}")


def _document(value: Any) -> Any:
    """A document member as JSON with integral numbers as ints (a Struct holds doubles)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: _document(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_document(item) for item in value]
    return value


# -- botocore -> JSON -------------------------------------------------------------------------


class TooLarge(ResourceExhausted):
    """An answer larger than the byte budget it had to fit in."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the answer is larger than {max_bytes} bytes, the most a response message may "
            "carry; ask for less (a page size, a projection) or use Paginate",
            reason="RESULT_TOO_LARGE",
            metadata={"max_bytes": str(max_bytes)},
        )


def to_json(value: Any, max_bytes: int) -> Any:
    """`sized_json` without the size."""
    return sized_json(value, max_bytes)[0]


def sized_json(value: Any, max_bytes: int) -> tuple[Any, int]:
    """A botocore answer (parsed by its shapes) as JSON: bytes as base64, datetimes as ISO
    8601 in UTC, integers beyond 2^53 as strings; nested dicts and lists alike.

    Returns:
        The JSON, and its size as counted for the budget.

    Raises:
        TooLarge: the JSON would take more than about `max_bytes` (strings and keys by
            their length, every other value as 8 bytes), found before it is all built.
    """
    budget = [max_bytes]

    def spend(size: int) -> None:
        budget[0] -= size
        if budget[0] < 0:
            raise TooLarge(max_bytes)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            spend(len(item) + 2)
            return item
        if isinstance(item, bool) or item is None:
            spend(_SCALAR_BYTES)
            return item
        if isinstance(item, int):
            spend(_SCALAR_BYTES)
            return item if abs(item) <= MAX_SAFE_INTEGER else str(item)
        if isinstance(item, float):
            spend(_SCALAR_BYTES)
            return item
        if isinstance(item, bytes | bytearray):
            spend((len(item) + 2) // 3 * 4 + 2)
            return base64.b64encode(item).decode("ascii")
        if isinstance(item, dt.datetime):
            spend(32)
            return _iso(item)
        if isinstance(item, Mapping):
            result: dict[str, Any] = {}
            for key, inner in item.items():
                spend(len(key) + 4)
                result[str(key)] = walk(inner)
            return result
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        text = str(item)  # nothing botocore parses lands here; keep it visible, not lost
        spend(len(text) + 2)
        return text

    result = walk(value)
    return result, max_bytes - budget[0]


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
