"""Helpers of the AwsService tests: a sidecar whose `type: cloud` service talks to the moto
server, Struct building, and moto's simple (Docker-free) Lambda backend."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer
from google.protobuf import json_format, struct_pb2

from generated.integration.v1 import aws_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

__all__ = [
    "ALLOW",
    "aws_config",
    "aws_sidecar",
    "moto_lambda_without_docker",
    "plain",
    "struct",
]

ALLOW = (
    "dynamodb:*",
    "dynamdb:*",  # a misspelt service, allowed so the test reaches the name check
    "sns:CreateTopic",
    "sns:Publish",
    "sns:ListTopics",
    "iam:CreateRole",
    "lambda:CreateFunction",
    "lambda:Invoke",
    "lambda:InvokeWithResponseStream",
)


def aws_config(server: MotoServer, *, allow: tuple[str, ...] = ALLOW, extra: str = "") -> str:
    """A config with one `type: cloud` service `aws` on `server`."""
    patterns = ", ".join(f"'{pattern}'" for pattern in allow)
    return f"""
services:
  aws:
    type: cloud
    region: us-east-1
    endpoint_url: {server.url}
    credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}
    allow: [{patterns}]
{extra}"""


@asynccontextmanager
async def aws_sidecar(
    config: str,
) -> AsyncIterator[tuple[RunningServer, aws_pb2_grpc.AwsServiceStub]]:
    """The real sidecar on a free port and an AwsService stub on it."""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield running, aws_pb2_grpc.AwsServiceStub(channel)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def _moto_api(server: MotoServer, body: dict[str, Any] | None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{server.url}/moto-api/config", data=data, method="POST" if data else "GET"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read() or b"{}")
        return result


@asynccontextmanager
async def moto_lambda_without_docker(server: MotoServer) -> AsyncIterator[None]:
    """moto's simple Lambda backend for the duration: `POST /moto-api/config` with
    `{"lambda": {"use_docker": false}}` (moto 5's config API; what
    `mock_aws(config=...)` sets in process). Its Invoke runs no code: it answers the request
    payload back (or "Simple Lambda happy path OK" for an empty one). The previous setting
    is restored afterwards (moto's config is per process)."""
    before = await asyncio.to_thread(_moto_api, server, None)
    await asyncio.to_thread(_moto_api, server, {"lambda": {"use_docker": False}})
    try:
        yield
    finally:
        await asyncio.to_thread(_moto_api, server, {"lambda": before.get("lambda", {})})
