"""examples/buf-generate: the Python template runs with the dev venv alone and its output
imports; the multi-language template is well formed and covers the languages the guide
promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "examples" / "buf-generate"
BUF = Path(sys.executable).parent / "buf"


def test_the_python_template_generates_importable_messages(tmp_path: Path) -> None:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    template = str(GUIDE / "buf.gen.python.yaml")
    generated = subprocess.run(
        [str(BUF), "generate", "--template", template, "-o", str(tmp_path)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    out = tmp_path / "gen" / "python"
    assert (out / "integration" / "v1" / "cache_pb2.pyi").is_file()
    imported = subprocess.run(
        [sys.executable, "-c",
         "from integration.v1 import cache_pb2; print(cache_pb2.GetRequest(key='k').key)"],
        cwd=out, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "k"


def test_the_multi_language_template_covers_the_promised_languages() -> None:
    template = yaml.safe_load((GUIDE / "buf.gen.yaml").read_text())
    assert template["version"] == "v2"
    assert template["inputs"] == [{"directory": "proto"}]
    outs = {plugin["out"] for plugin in template["plugins"]}
    assert outs == {"gen/go", "gen/java", "gen/csharp", "gen/rust", "gen/ts"}
    for plugin in template["plugins"]:
        assert ("local" in plugin) != ("protoc_builtin" in plugin), plugin
