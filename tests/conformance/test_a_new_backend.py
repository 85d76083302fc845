"""A backend added with one spec and one line in the backend table is known everywhere:
config validation takes its name, the server builds it and AdminService lists its features,
an RPC of a family it lacks answers UNSUPPORTED_OPERATION, and the cache conformance suite
runs against it, without any other file of the project changing.

The new backend is written to a temporary folder: a cache that keeps its data in a
`MemoryCache` but offers only the core operations (no hashes, lists or sets)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support import ROOT, error_info

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.config import ConfigError, parse_config
from sidecar.config.backends import BACKENDS
from sidecar.testing import serve_for_test

BACKEND = '''
"""A core-only cache: MemoryCache's data, none of its optional families."""
from sidecar.backends.cache import MemoryCache
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import CacheServiceConfig

CORE = ("get", "set", "delete", "exists", "expire", "ttl", "increment",
        "get_many", "set_many", "batch", "ping", "close", "features")


class TinyCache:
    def __init__(self, clock):
        self._inner = MemoryCache(clock=clock)
        for name in CORE:
            setattr(self, name, getattr(self._inner, name))


def _build(context: BuildContext[CacheServiceConfig]) -> TinyCache:
    return TinyCache(context.clock.monotonic)


SPEC = BackendSpec(type="cache", backend="tiny", settings=CacheServiceConfig, build=_build)
'''

PLUGIN = """
from sidecar.config.backends import BACKENDS

BACKENDS[("cache", "tiny")] = "tiny_cache"
"""

CONFIG = """
services:
  small: {type: cache, backend: tiny}
  full: {type: cache}
"""


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The new backend's module on sys.path, and its one line in the backend table."""
    (tmp_path / "tiny_cache.py").write_text(BACKEND)
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BACKENDS, ("cache", "tiny"), "tiny_cache")
    return tmp_path


def test_config_validation_takes_the_new_name_and_lists_it_when_refusing(tiny: Path) -> None:
    assert parse_config(CONFIG).services["small"].backend == "tiny"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as raised:
        parse_config(CONFIG.replace("backend: tiny", "backend: tinyy"))
    assert "services.small.backend: must be one of: memory, redis, tiny (got 'tinyy')" in str(
        raised.value
    )


async def test_the_server_builds_it_and_admin_lists_its_features(tiny: Path) -> None:
    async with (
        serve_for_test(CONFIG) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        listed = await admin.ListIntegrations(admin_pb2.ListIntegrationsRequest())
        features = {item.name: list(item.features) for item in listed.integrations}
        assert features["small"] == []
        assert features["full"] == ["hashes", "lists", "sets"]
        cache = CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(target="small", key="k", value=b"v"))
        assert (await cache.Get(cache_pb2.GetRequest(target="small", key="k"))).value == b"v"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await cache.HashSet(
                cache_pb2.HashSetRequest(target="small", key="h", fields={"f": b"1"})
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(raised.value)
        assert info.reason == "UNSUPPORTED_OPERATION"
        assert dict(info.metadata) == {"target": "small", "feature": "hashes"}
        await cache.HashSet(cache_pb2.HashSetRequest(target="full", key="h", fields={"f": b"1"}))


def test_the_cache_conformance_suite_runs_against_it(tiny: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tiny), str(ROOT)])}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "tiny_plugin"),
            "tests/conformance/cache",
            "-k",
            "tiny",
        ],
        check=False,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = re.findall(r"::(test_\w+)\[tiny[^\]]*\] PASSED", run.stdout)
    # Every core test ran on it and passed; none of the tests of a family it lacks did.
    assert set(ran) == core_tests(ROOT / "tests/conformance/cache/test_cache_conformance.py")


def core_tests(suite: Path) -> set[str]:
    """The tests of `suite` not marked `needs(...)`."""
    return {
        node.name
        for node in ast.parse(suite.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
        and not any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "needs"
            for d in node.decorator_list
        )
    }
