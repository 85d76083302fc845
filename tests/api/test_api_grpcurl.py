"""HttpService as a non-Python client sees it: the real grpcurl binary, the contract learned
through server reflection, a JSON body as text and the answer's body as base64."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from api.upstream import Upstream
from support import grpcurl_path

from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e


async def test_grpcurl_calls_an_upstream_through_reflection(upstream: Upstream) -> None:
    config = f"services:\n  up: {{type: api, base_url: '{upstream.url}'}}\n"
    request = {"request": {"method": "POST", "path": "echo/orders", "json": '{"n": 1}'}}
    async with serve_for_test(config) as running:
        process = await asyncio.create_subprocess_exec(
            grpcurl_path(),
            "-plaintext",
            "-d",
            json.dumps(request),
            running.address,
            "integration.v1.HttpService/Call",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["status"] == 200
    seen = json.loads(base64.b64decode(reply["body"]))
    assert (seen["method"], seen["path"], json.loads(seen["body"])) == (
        "POST",
        "/echo/orders",
        {"n": 1},
    )
