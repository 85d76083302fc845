"""Calls the sidecar cannot serve answer with a code that says why, and cost the error log
nothing: a request that is not a valid message (INVALID_ARGUMENT, on every kind of method),
and Health/List, which grpcio-health-checking does not implement (UNIMPLEMENTED)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar_process import SidecarProcess, sidecar_process
from support import error_info, grpcurl_path

pytestmark = pytest.mark.e2e

GARBAGE = b"\xff\xff\xff not a protobuf message"
CALLS_EACH = 20
STREAM_REQUEST_METHODS = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
UNARY_REQUEST_METHODS = (
    "/integration.v1.CacheService/Get",  # unary -> unary
    "/integration.v1.PubSubService/Subscribe",  # unary -> stream
    "/grpc.health.v1.Health/Check",  # a handler grpcio-health-checking provides
)


def warnings_and_errors(sidecar: SidecarProcess) -> list[dict[str, object]]:
    return [e for e in sidecar.log_entries() if e["level"] not in ("debug", "info")]


async def code_of_stream_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    call = channel.stream_stream(method)(iter([GARBAGE]))  # no serializers: raw bytes
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


async def code_of_unary_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = (
            channel.unary_stream(method)(GARBAGE)
            if method.endswith("/Subscribe")
            else channel.unary_unary(method)(GARBAGE)
        )
        if isinstance(call, grpc.aio.UnaryStreamCall):
            async for _ in call:
                pass
        else:
            await call
    return caught.value


async def test_undecodable_requests_are_invalid_argument_and_log_no_error(
    tmp_path: Path,
) -> None:
    async with sidecar_process(tmp_path) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            errors = [
                *[
                    await code_of_stream_call(channel, method)
                    for method in STREAM_REQUEST_METHODS
                    for _ in range(CALLS_EACH)
                ],
                *[
                    await code_of_unary_call(channel, method)
                    for method in UNARY_REQUEST_METHODS
                    for _ in range(CALLS_EACH)
                ],
            ]
        assert await sidecar.stop() == 0
    assert {e.code() for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert {error_info(e).reason for e in errors} == {"INVALID_REQUEST"}
    assert warnings_and_errors(sidecar) == []


async def test_health_list_is_unimplemented_and_logs_no_error(tmp_path: Path) -> None:
    async with sidecar_process(tmp_path) as sidecar:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health.List(health_pb2.HealthListRequest())
        process = await asyncio.create_subprocess_exec(
            grpcurl_path(),
            "-plaintext",
            "-format-error",
            sidecar.address,
            "grpc.health.v1.Health/List",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, formatted_error = await asyncio.wait_for(process.communicate(), 20)
        assert await sidecar.stop() == 0
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert json.loads(formatted_error)["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert warnings_and_errors(sidecar) == []
