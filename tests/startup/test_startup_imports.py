"""What the sidecar imports to start: only what its configuration uses.

Start-up time and idle memory are mostly imports, so each test starts a real server in a
fresh interpreter (the way `integration-sidecar serve` does: the CLI module, the config,
`sidecar.server`), stops it, and looks at `sys.modules`. A new import on the start-up path
fails here until it is either made lazy or added to the allow-list on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

import generated.integration.v1 as generated
from sidecar.server import HEALTH_SERVICE, SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]

# Loaded only when a service, a connection or an exporter that needs it is configured.
DENIED = (
    "openai",
    "anthropic",
    "asyncpg",
    "aiobotocore",
    "botocore",
    "boto3",
    "aiohttp",
    "aio_pika",
    "aiormq",
    "nats",
    "aiokafka",
    "aiomqtt",
    "redis",
    "httpx",
    "httpx2",
    "httpcore2",
    "opentelemetry.exporter",
    "opentelemetry.sdk.trace.export",
    "prometheus_client",
    "defusedxml",
    "xml.etree",  # the standard library's XML parser: only for an XML transform
    "jsonschema",
    "referencing",
    "graphql",
    "websockets",
    "kubernetes_asyncio",
)

# Third-party distributions the embedded defaults need (everything else imported at start is
# the standard library or the project's own `sidecar` and `generated` packages).
ALLOWED_THIRD_PARTY = frozenset(
    {
        "aiosqlite",  # the embedded `sql` service (SQLite in memory)
        "annotated_types",  # pydantic
        "google",  # protobuf
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "grpc_tools",  # grpc looks for it (grpc._runtime_protos), a few modules
        "opentelemetry",  # the API and the metrics SDK (metrics are on by default)
        "pydantic",
        "pydantic_core",
        "typing_extensions",
        "typing_inspection",
        "yaml",
        "_cython_3_2_8",  # grpc's compiled runtime
        "_cython_3_3_1",  # grpc's compiled runtime
        "cython_runtime",
        "_distutils_hack",  # setuptools' hook, loaded by site
        "__editable___integration_sidecar_0_1_0_finder",  # the editable install, by site
    }
)

_START = """
import asyncio, json, sys
from sidecar.cli import main  # the command line's own imports
from sidecar.config import load_config, parse_config
import sidecar.server

async def run():
    text = sys.argv[1]
    config = parse_config(text) if text else load_config(None)
    running = await sidecar.server.start_server(config, listen="127.0.0.1:0")
    await running.stop(0)

asyncio.run(run())
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_start(tmp_path: Path, config_text: str = "") -> set[str]:
    """Every module loaded once a server on `config_text` (empty: embedded defaults) started."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_START), config_text],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the exit code is asserted with the stderr shown
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def _loaded(modules: set[str], name: str) -> bool:
    return any(module == name or module.startswith(name + ".") for module in modules)


def test_embedded_defaults_import_no_optional_library(tmp_path: Path) -> None:
    modules = _modules_after_start(tmp_path)
    assert [name for name in DENIED if _loaded(modules, name)] == []


def test_embedded_defaults_import_only_allowed_third_party_packages(tmp_path: Path) -> None:
    modules = _modules_after_start(tmp_path)
    own = {"sidecar", "generated", "__main__"}
    tops = {m.split(".")[0] for m in modules if not m.startswith("_sysconfigdata_")}
    unexpected = tops - sys.stdlib_module_names - own - ALLOWED_THIRD_PARTY
    assert unexpected == set(), "make it lazy, or add it to ALLOWED_THIRD_PARTY on purpose"


def test_a_service_not_configured_costs_no_servicer_import(tmp_path: Path) -> None:
    modules = _modules_after_start(tmp_path, "services:\n  cache: {type: cache}\n")
    assert "sidecar.servicers.cache" in modules
    for absent in ("sql", "ai", "objectstore", "queue", "http", "aws", "graphql", "websocket"):
        assert f"sidecar.servicers.{absent}" not in modules
        assert f"generated.integration.v1.{absent}_pb2" not in modules
    # Nor its backends' code: the runtime knows AI services only as `PipelineOwner`s.
    assert not _loaded(modules, "sidecar.ai") and not _loaded(modules, "sidecar.backends.ai")


@pytest.mark.parametrize("name", [n for n in SERVICE_NAMES if n != HEALTH_SERVICE])
def test_every_served_name_is_a_service_of_the_contract(name: str) -> None:
    """The table names services as strings (so it imports no generated module): each must be
    a service the generated code declares."""
    package = Path(generated.__file__).parent
    for module in sorted(package.glob("*_pb2.py")):
        __import__(f"{generated.__name__}.{module.stem}")
    assert descriptor_pool.Default().FindServiceByName(name).full_name == name
