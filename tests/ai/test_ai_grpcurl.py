"""AIService as a non-Python client sees it: the real grpcurl binary, through reflection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ai.fake_llm import FakeLLM
from ai.helpers import ai_sidecar, config, model
from support import grpcurl_path

pytestmark = pytest.mark.e2e


async def _grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    return out.decode()


def _messages(output: str) -> list[dict[str, Any]]:
    """grpcurl prints one JSON object per streamed message."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    output = output.strip()
    while position < len(output):
        message, position = decoder.raw_decode(output, position)
        found.append(message)
        while position < len(output) and output[position].isspace():
            position += 1
    return found


async def test_grpcurl_streams_a_completion_in_order_with_usage(fake: FakeLLM) -> None:
    fake.words = [f"w{i}" for i in range(30)]
    request = {"target": "openai", "messages": [{"role": "ROLE_USER", "content": "count"}]}
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        output = await _grpcurl(
            "-d", json.dumps(request), ai.running.address, "integration.v1.AIService/StreamComplete"
        )
    messages = _messages(output)
    assert "".join(m.get("content", "") for m in messages) == " ".join(f"w{i}" for i in range(30))
    end = messages[-1]["end"]
    assert end["finish_reason"] == "FINISH_REASON_STOP"
    assert end["usage"] == {"input_tokens": 4, "output_tokens": 30, "total_tokens": 34}
    assert end["deployment"] == "openai/fake-model"


async def test_grpcurl_lists_and_describes_ai_service() -> None:
    async with ai_sidecar("server:\n  access_log: false\n") as ai:
        listed = await _grpcurl(ai.running.address, "list")
        described = await _grpcurl(ai.running.address, "describe", "integration.v1.AIService")
        health = await _grpcurl(
            "-d",
            '{"service": "integration.v1.AIService"}',
            ai.running.address,
            "grpc.health.v1.Health/Check",
        )
    assert "integration.v1.AIService" in listed.split()
    assert json.loads(health) == {"status": "SERVING"}
    assert "rpc StreamComplete ( .integration.v1.StreamCompleteRequest ) returns ( stream" in (
        described
    )
