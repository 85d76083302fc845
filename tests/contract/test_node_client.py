"""The contract as a Node.js app sees it: @grpc/grpc-js with stubs loaded from proto/."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sidecar.server import RunningServer

pytestmark = pytest.mark.e2e

CLIENT = Path(__file__).parent / "node" / "client.js"


async def test_node_client_round_trips_cache_errors_and_pubsub(sidecar: RunningServer) -> None:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT),
        sidecar.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    findings = json.loads(out)
    assert findings == {
        "set_applied": True,
        "get": {"found": True, "value": "from node"},
        "empty_key": {"code": 3, "has_error_info": True},
        "message": {"channel": "node.events", "payload": "hi"},
        "batch": ["a", "b", "c"],
    }
