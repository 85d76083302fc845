"""examples/node/client.js, run as a user would against a live sidecar (embedded defaults):
a unary cache call, a streamed echo completion, a pub/sub subscription, a decoded ErrorInfo.

Its packages are its own: `make install` runs `npm ci` in examples/node, from the example's
package-lock.json (the same pinned versions as the contract tests' client).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from sidecar.server import RunningServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"


async def test_the_node_example_runs_against_a_live_sidecar(sidecar: RunningServer) -> None:
    assert (EXAMPLE / "node_modules").is_dir(), "run `make install` (npm ci in examples/node)"
    environment = {
        **os.environ,
        "INTEGRATION_SIDECAR_ADDRESS": sidecar.address,  # as an injected pod has it
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(EXAMPLE / "client.js"),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "cache: found=true value=hello",
        "ai: finish=FINISH_REASON_STOP text=streamed from the echo provider",
        "pubsub: channel=example.events payload=order 42 paid",
        "error: code=INVALID_ARGUMENT reason=INVALID_REQUEST domain=integration.v1",
    ]


def test_the_example_pins_the_packages_the_contract_tests_use() -> None:
    example = json.loads((EXAMPLE / "package-lock.json").read_text())["packages"]
    contract = json.loads((ROOT / "tests" / "contract" / "node" / "package-lock.json").read_text())[
        "packages"
    ]
    for name in ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"):
        key = f"node_modules/{name}"
        assert example[key]["version"] == contract[key]["version"], name
