"""`make lint` guards the architecture and the contract: `lint-imports` checks the layering
contracts in pyproject.toml, and `buf breaking` checks proto/ against the image of the contract
as last released (contracts/). Each check passes on the tree and fails on a deliberate mistake
made in a temporary copy, run with the very command line `make lint` runs."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@functools.cache
def _make_lint_commands() -> tuple[tuple[str, ...], ...]:
    """The commands `make lint` would run (`make -n` prints them without running any)."""
    out = subprocess.run(
        ["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return tuple(tuple(shlex.split(line)) for line in out.splitlines() if line.strip())


def _lint_command(tool: str, subcommand: str | None = None) -> list[str]:
    """The `make lint` line running `tool` (and `subcommand`), with the tool taken from the
    venv running the tests."""
    for argv in _make_lint_commands():
        if Path(argv[0]).name == tool and (subcommand is None or argv[1:2] == (subcommand,)):
            return [str(BIN / tool), *argv[1:]]
    raise AssertionError(f"`make lint` does not run {tool} {subcommand or ''}")


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _copy(tmp_path: Path, *names: str) -> Path:
    """A copy of the named files and folders of the repository, as a working directory."""
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    return tmp_path


# --- layering (import-linter) ---


def test_layering_contracts_hold_on_the_tree() -> None:
    result = _run(_lint_command("lint-imports"), ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sidecar layers KEPT" in result.stdout
    assert " 0 broken" in result.stdout


def test_a_wrong_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    work = _copy(tmp_path, "pyproject.toml", "sidecar")
    wrong = work / "sidecar" / "resilience" / "_wrong_way.py"
    wrong.write_text("import sidecar.server  # resilience must not know the server\n")

    result = _run(_lint_command("lint-imports"), work)

    assert result.returncode != 0, result.stdout
    assert "sidecar layers BROKEN" in result.stdout
    assert "sidecar.resilience is not allowed to import sidecar.server" in result.stdout
    # The copy was analysed, not the installed tree.
    assert "sidecar.resilience._wrong_way -> sidecar.server" in result.stdout


def test_a_new_top_level_module_must_be_given_a_layer(tmp_path: Path) -> None:
    work = _copy(tmp_path, "pyproject.toml", "sidecar")
    (work / "sidecar" / "unplaced.py").write_text('"""Belongs to no layer yet."""\n')

    result = _run(_lint_command("lint-imports"), work)

    assert result.returncode != 0, result.stdout
    assert "sidecar layers BROKEN" in result.stdout
    assert "- sidecar.unplaced" in result.stdout


# --- contract (buf breaking against the released image) ---

_GET_REQUEST = re.compile(r"(message GetRequest \{\n  string target = 1;\n)  string key = 2;\n")


def test_contract_is_compatible_with_the_released_image() -> None:
    result = _run(_lint_command("buf", "breaking"), ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        (r"\1", 'Previously present field "2" with name "key" on message "GetRequest"'),
        (r"\1  string key = 3;\n", 'Previously present field "2" with name "key"'),
        (r"\1  bytes key = 2;\n", 'Field "2" with name "key" on message "GetRequest" changed'),
    ],
    ids=["field-removed", "field-renumbered", "field-retyped"],
)
def test_a_breaking_proto_change_fails_against_the_released_image(
    tmp_path: Path, replacement: str, expected: str
) -> None:
    work = _copy(tmp_path, "buf.yaml", "proto", "contracts")
    cache_proto = work / "proto" / "integration" / "v1" / "cache.proto"
    changed, count = _GET_REQUEST.subn(replacement, cache_proto.read_text())
    assert count == 1, "cache.proto no longer has the GetRequest this test edits"
    cache_proto.write_text(changed)

    result = _run(_lint_command("buf", "breaking"), work)

    assert result.returncode != 0, result.stdout + result.stderr
    assert expected in result.stdout
