"""TransformService as a non-Python client sees it: the real grpcurl binary, the contract
learned through server reflection, the input and output as base64."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from support import grpcurl_path

from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

CONFIG = """
schemas:
  order:
    schema: {type: object, required: [order]}
transforms:
  orders:
    steps: [xml_to_json, "validate:order"]
"""


async def _grpcurl(address: str, method: str, request: dict[str, object]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        "-d",
        json.dumps(request),
        address,
        f"integration.v1.TransformService/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, (out or err).decode()


async def test_grpcurl_transforms_lists_and_is_refused() -> None:
    async with serve_for_test(CONFIG) as running:
        xml = base64.b64encode(b'<order id="1"><i>a</i><i>b</i></order>').decode()
        code, out = await _grpcurl(
            running.address,
            "Transform",
            {"transform": "orders", "input": xml, "contentType": "application/xml"},
        )
        assert code == 0, out
        reply = json.loads(out)
        assert reply["content_type"] == "application/json"
        assert json.loads(base64.b64decode(reply["output"])) == {
            "order": {"@_id": "1", "i": ["a", "b"]}
        }

        code, out = await _grpcurl(running.address, "ListTransforms", {})
        assert code == 0, out
        assert [t["name"] for t in json.loads(out)["transforms"]] == [
            "orders",
            "validate:order",
            "xml_to_json",
        ]

        bad = base64.b64encode(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>").decode()
        code, out = await _grpcurl(
            running.address, "Transform", {"transform": "orders", "input": bad}
        )
        assert code != 0
        assert "InvalidArgument" in out and "XML with a DTD is refused" in out
