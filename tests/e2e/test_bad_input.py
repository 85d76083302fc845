"""Bad input gets INVALID_ARGUMENT or NOT_FOUND with an ErrorInfo reason, never INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from support import error_info, rich_status

from generated.integration.v1 import admin_pb2, cache_pb2, pubsub_pb2
from generated.integration.v1.admin_pb2_grpc import AdminServiceStub
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub

pytestmark = pytest.mark.e2e


async def expect_error(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is code, caught.value.details()
    info = error_info(caught.value)
    assert (info.reason, info.domain) == (reason, "integration.v1")
    return caught.value


async def test_empty_key_is_invalid_argument_naming_the_field(cache: CacheServiceStub) -> None:
    error = await expect_error(
        cache.Get(cache_pb2.GetRequest(key="")), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"
    )
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in rich_status(error).details)
    assert bad_request.field_violations[0].field == "key"


async def test_negative_ttl_is_invalid_argument(cache: CacheServiceStub) -> None:
    error = await expect_error(
        cache.Set(cache_pb2.SetRequest(key="k", value=b"v", ttl=duration_pb2.Duration(seconds=-5))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert error_info(error).metadata["field"] == "ttl"


async def test_unknown_target_is_not_found(cache: CacheServiceStub) -> None:
    error = await expect_error(
        cache.Get(cache_pb2.GetRequest(target="nowhere", key="k")),
        grpc.StatusCode.NOT_FOUND,
        "TARGET_NOT_FOUND",
    )
    assert error_info(error).metadata["target"] == "nowhere"


async def test_oversize_value_is_invalid_argument(cache: CacheServiceStub) -> None:
    await expect_error(
        cache.Set(cache_pb2.SetRequest(key="big", value=b"x" * (1024 * 1024 + 1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALUE_TOO_LARGE",
    )


async def test_message_over_the_server_limit_is_resource_exhausted(
    cache: CacheServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cache.Set(cache_pb2.SetRequest(key="huge", value=b"x" * (5 * 1024 * 1024)))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_batch_names_the_bad_operation(cache: CacheServiceStub) -> None:
    error = await expect_error(
        cache.Batch(
            cache_pb2.BatchRequest(
                operations=[
                    cache_pb2.BatchOperation(get=cache_pb2.GetRequest(key="ok")),
                    cache_pb2.BatchOperation(get=cache_pb2.GetRequest(key="")),
                ]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert error_info(error).metadata["field"] == "operations[1].get.key"


async def test_publish_without_channel_is_invalid(pubsub: PubSubServiceStub) -> None:
    await expect_error(
        pubsub.Publish(pubsub_pb2.PublishRequest(channel="", payload=b"x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )


async def test_subscribe_to_nothing_is_invalid(pubsub: PubSubServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in pubsub.Subscribe(pubsub_pb2.SubscribeRequest()):
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_REQUEST"


async def test_unknown_integration_is_not_found(admin: AdminServiceStub) -> None:
    await expect_error(
        admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="ghost")),
        grpc.StatusCode.NOT_FOUND,
        "INTEGRATION_NOT_FOUND",
    )
