"""Human units in the config: durations (`500ms`, `1m30s`) and sizes (`4MiB`).

Operators think in `30s` and `4MiB`, gRPC and asyncio want float seconds and int bytes. The
conversion lives in two pydantic `Annotated` types so every field that holds a duration or a
size parses, bounds-checks and reports errors the same way, and the rest of the sidecar only
ever sees plain numbers.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

__all__ = ["Bytes", "DurationSeconds", "GiB", "KiB", "MiB", "parse_bytes", "parse_duration"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

_SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": KiB,
    "MiB": MiB,
    "GiB": GiB,
    "TiB": 1024 * GiB,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """Turn `500ms`, `10s`, `5m`, `1h`, `7d`, `1m30s` or a number of seconds into float seconds.

    Units can be combined, largest first by habit (`1h30m`), and each part may have a
    fraction (`1.5s`). A bare number, or a string holding one (what `${VAR}` expansion
    produces), is seconds. Positivity is checked by the `DurationSeconds` type, not here, so
    the error for `-1` says "must be > 0" rather than "invalid".

    Raises:
        PydanticCustomError: `invalid_duration`, with a message that shows the accepted form.
    """
    if isinstance(value, bool):
        raise _duration_error(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _duration_error(value)
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if _DURATION.fullmatch(text):
            total = sum(
                (Decimal(number) * _DURATION_UNITS[unit])
                for number, unit in _DURATION_PART.findall(text)
            )
            return float(total)
    raise _duration_error(value)


def parse_bytes(value: object) -> int:
    """Turn `4MiB`, `512KiB`, `1MB`, `10GiB` or a number of bytes into int bytes.

    Binary units (KiB = 1024) and decimal units (KB = 1000) are both accepted because both are
    common and mean different things; `1.5MiB` is fine as long as it is a whole number of bytes.
    A bare integer, or a string holding one, is bytes.

    Raises:
        PydanticCustomError: `invalid_size`, with a message that shows the accepted form.
    """
    if isinstance(value, bool):
        raise _size_error(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _size_error(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        match = _SIZE.fullmatch(text)
        if match:
            try:
                total = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2)]
            except InvalidOperation:  # pragma: no cover - the regex admits only plain numbers
                raise _size_error(value) from None
            if total == total.to_integral_value():
                return int(total)
    raise _size_error(value)


def _duration_error(value: object) -> PydanticCustomError:
    return PydanticCustomError(
        "invalid_duration",
        "invalid duration {value}: use a number with ms, s, m, h or d",
        {"value": repr(value)},
    )


def _size_error(value: object) -> PydanticCustomError:
    return PydanticCustomError(
        "invalid_size",
        "invalid size {value}: use a whole number of bytes, or a number with "
        "B, KB, MB, GB, KiB, MiB or GiB",
        {"value": repr(value)},
    )


DurationSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""A positive duration, written `500ms` / `10s` / `5m` / `1h` / `7d` / `1m30s` or as seconds."""

Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]
"""A positive size, written `4MiB` / `512KiB` / `1MB` / `10GiB` or as a number of bytes."""
