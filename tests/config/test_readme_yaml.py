"""Every YAML example in the README is a whole config file that passes `check-config`.

The rule for README authors: a ```yaml block is a complete config file (the sections it
shows, every service it names), so a reader can paste it and run it. Environment variables
the blocks reference are set to dummy values here; `check-config` never connects to the
servers a block names, so hosts like `redis.internal` need not exist.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sidecar.config import parse_config
from sidecar.config.services import ai

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCED_YAML = re.compile(r"^```ya?ml[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    text: str

    @property
    def environ(self) -> dict[str, str]:
        """A dummy value for every `${VAR}` the block references."""
        return {name: f"dummy-{name.lower()}" for name in _REFERENCE.findall(self.text)}


def _readme_yaml_blocks() -> list[Block]:
    readme = README.read_text(encoding="utf-8")
    return [
        Block(readme.count("\n", 0, match.start()) + 1, match.group("body"))
        for match in _FENCED_YAML.finditer(readme)
    ]


BLOCKS = _readme_yaml_blocks()


def test_the_readme_has_its_yaml_examples() -> None:
    # The configuration reference, SQL and AI sections each show one.
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line-{block.line}" for block in BLOCKS])
def test_readme_yaml_block_passes_check_config(block: Block) -> None:
    parse_config(block.text, environ=block.environ, source=f"README.md block at line {block.line}")


def test_readme_ai_example_passes_check_config_on_the_command_line(tmp_path: Path) -> None:
    *_, block = [block for block in BLOCKS if "type: ai_model" in block.text]  # the AI section's
    path = tmp_path / "ai.yaml"
    path.write_text(block.text)
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **block.environ},
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"{path}: ok")


def test_the_ai_module_docstring_example_is_yaml_with_the_token_reference() -> None:
    # A fragment of a config (it names services it does not define), but valid YAML.
    docstring = inspect.getdoc(ai) or ""
    example = textwrap.dedent(docstring.split("\n\n")[1])
    services = yaml.safe_load(example)["services"]
    assert services["openai"]["auth"] == {"type": "bearer", "token": "${OPENAI_API_KEY}"}
