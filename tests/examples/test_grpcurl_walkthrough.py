"""examples/grpcurl.md, run: every `$ grpcurl` line of its console blocks is executed with the
real grpcurl binary against a live sidecar, and the JSON or error it shows must be what comes
back (the long listings it does not show are checked for success only)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import pytest
from support import grpcurl_path

from sidecar.server import RunningServer

pytestmark = pytest.mark.e2e

WALKTHROUGH = Path(__file__).resolve().parents[2] / "examples" / "grpcurl.md"


def commands() -> list[tuple[list[str], str]]:
    """(argv, the output shown after it) for every `$ grpcurl` line in a console block."""
    found: list[tuple[list[str], str]] = []
    for block in re.findall(r"```console\n(.*?)```", WALKTHROUGH.read_text(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, shown = chunk.partition("\n")
            found.append((shlex.split(command), shown.strip()))
    return found


def test_the_walkthrough_has_commands() -> None:
    assert len(commands()) >= 8


async def test_every_command_of_the_walkthrough_works(sidecar: RunningServer) -> None:
    address = {"localhost:50051": sidecar.address}
    for shown_argv, shown in commands():
        assert shown_argv[0] == "grpcurl"
        argv = [grpcurl_path(), *(address.get(a, a) for a in shown_argv[1:])]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 20)
        if shown.startswith("ERROR:"):
            assert process.returncode != 0, argv
            for line in shown.splitlines():
                assert line.strip() in err.decode(), (argv, line)
            continue
        assert process.returncode == 0, (argv, err.decode())
        if "StreamComplete" in argv[-1]:  # several JSON documents, ids vary
            found = re.findall(r"^\{.*?^\}", out.decode(), re.M | re.S)
            messages = [json.loads(m) for m in found]
            assert "".join(m.get("content", "") for m in messages) == "hello there"
            assert messages[-1]["end"]["finish_reason"] == "FINISH_REASON_STOP"
        elif shown:
            assert json.loads(out) == json.loads(shown), argv
