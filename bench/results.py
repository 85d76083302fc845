"""The figures of one `make bench` run, gathered from every section into bench/results.json.

Each section prints its table for a reader and `record`s the same figures here; `write`
saves them with what machine and run produced them, so two runs can be compared by a
program instead of by eye. Units are in the figures' names (`_us`, `_ms`, `_per_s`, `_mb`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_PATH", "record", "write"]

RESULTS_PATH = Path(__file__).with_name("results.json")
_records: list[dict[str, Any]] = []


def record(section: str, case: str, **figures: float | int | str | None) -> None:
    """Keep one row of `section`: a case (and its callers or streams) and its figures;
    None figures (not measured for this case) are left out."""
    row: dict[str, Any] = {"section": section, "case": case}
    row.update({name: _rounded(value) for name, value in figures.items() if value is not None})
    _records.append(row)


def write(path: Path = RESULTS_PATH) -> None:
    """Save every recorded row, with the run's machine and settings."""
    document = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "settings": {
            name: value for name, value in os.environ.items() if name.startswith("BENCH_")
        },
        "results": _records,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwrote {len(_records)} results to {path}")


def _rounded(value: float | int | str) -> float | int | str:
    return round(value, 3) if isinstance(value, float) else value
