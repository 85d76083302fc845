"""Connection settings reach every connection a Redis backend opens: password, ACL user,
database number and client name, on the pipelined, pooled and subscriber connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis_server import OwnedRedis
from support import RedisConnect

from sidecar.backends.cache import GetOp, SetOp
from sidecar.backends.cache.redis import RedisCache
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.config import CacheServiceConfig, PubSubServiceConfig
from sidecar.errors import Unavailable


@pytest.fixture(scope="module")
def protected() -> Iterator[OwnedRedis]:
    """A Redis of this module's own that wants a password."""
    server = OwnedRedis(None, "--requirepass", "s3cret")
    server.start()
    yield server
    server.kill()


def settings(server: OwnedRedis, **changes: object) -> CacheServiceConfig:
    base = CacheServiceConfig(
        backend="redis", port=server.port, password=SecretStr("s3cret"), database=3
    )
    return base.model_copy(update=changes)


async def test_password_and_database_apply_to_single_commands_and_batches(
    redis_connect: RedisConnect,
    protected: OwnedRedis,
) -> None:
    cache = RedisCache(redis_connect(settings(protected)), name="cache")
    await cache.set("k", b"single")
    await cache.batch([SetOp("b", b"batched")], atomic=True)
    async with aioredis.Redis(port=protected.port, password="s3cret", db=3) as direct:
        assert await direct.mget("k", "b") == [b"single", b"batched"]
    assert await cache.batch([GetOp("k")], atomic=False) == [b"single"]
    await cache.close()


async def test_wrong_password_fails_with_unavailable(
    redis_connect: RedisConnect, protected: OwnedRedis
) -> None:
    cache = RedisCache(
        redis_connect(settings(protected, password=SecretStr("wrong"))), name="cache"
    )
    with pytest.raises(Unavailable):
        await cache.get("k")
    await cache.close()


async def test_acl_user_authenticates_with_its_own_password(
    redis_connect: RedisConnect, protected: OwnedRedis
) -> None:
    async with aioredis.Redis(port=protected.port, password="s3cret") as admin:
        await admin.execute_command("ACL", "SETUSER", "app", "on", ">apppass", "~*", "&*", "+@all")
    config = settings(protected, username="app", password=SecretStr("apppass"))
    cache = RedisCache(redis_connect(config), name="cache")
    await cache.set("user-key", b"v")
    assert await cache.get("user-key") == b"v"
    await cache.close()


async def test_broker_subscriber_connection_authenticates_and_is_named(
    redis_connect: RedisConnect,
    protected: OwnedRedis,
) -> None:
    config = PubSubServiceConfig(backend="redis", port=protected.port, password=SecretStr("s3cret"))
    broker = RedisBroker(redis_connect(config), name="pubsub")
    subscription = await broker.subscribe(["news"], [], buffer_size=4)
    assert await broker.publish("news", b"x") == 1
    async with aioredis.Redis(port=protected.port, password="s3cret") as admin:
        names = [entry.get("name") for entry in await admin.client_list()]
    assert broker.connection_name in names
    await subscription.close()
    await broker.close()
