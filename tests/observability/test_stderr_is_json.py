"""Every line a running sidecar writes on stderr is a JSON object, third-party libraries'
lines and Python warnings included; a traceback rides in the line's `exc` field."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from faultproxy import FaultProxy
from sidecar_process import SidecarProcess, sidecar_process
from support import eventually

from generated.integration.v1 import sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e


def _postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


def asyncpg_lines(sidecar: SidecarProcess) -> list[str]:
    return [line for line in sidecar.stderr_lines() if "asyncpg" in line]


@pytest.mark.skipif(not _postgres_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
async def test_asyncpg_warnings_with_tracebacks_are_json_lines(tmp_path: Path) -> None:
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        config = (
            "services:\n  db:\n    type: sql\n    backend: postgres\n"
            f"    dsn: postgresql://postgres@{proxy.host}:{proxy.port}/postgres\n"
        )
        async with (
            sidecar_process(tmp_path, config) as sidecar,
            grpc.aio.insecure_channel(sidecar.address) as channel,
        ):
            sql = sql_pb2_grpc.SqlServiceStub(channel)
            await sql.Query(sql_pb2.QueryRequest(sql="select 1"), timeout=10)
            # The pool loses its connections and cannot open new ones: asyncpg warns,
            # with a traceback, each time it fails to restore its floor of connections.
            await proxy.stop_accepting()
            await proxy.cut()
            await eventually(lambda: bool(asyncpg_lines(sidecar)), seconds=10)
            assert await sidecar.stop() == 0
    entries = sidecar.log_entries()  # fails on any line that is not JSON
    warnings = [e for e in entries if e["logger"].startswith("asyncpg")]
    assert warnings, "asyncpg wrote nothing"
    assert all(e["level"] == "warning" and "Traceback" in e["exc"] for e in warnings)


def test_python_warnings_and_uncaught_exceptions_are_json_lines() -> None:
    program = (
        "import warnings, threading\n"
        "from sidecar.observability.logging import configure_logging\n"
        "configure_logging('info')\n"
        "warnings.warn('something\\nis off', UserWarning)\n"
        "thread = threading.Thread(target=lambda: 1 / 0)\n"
        "thread.start(); thread.join()\n"
        "raise RuntimeError('uncaught')\n"
    )
    finished = subprocess.run(
        [sys.executable, "-W", "default", "-c", program],
        check=False,
        capture_output=True,
        timeout=30,
    )
    assert finished.returncode == 1
    entries = [json.loads(line) for line in finished.stderr.decode().splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("py.warnings", "warning"),
        ("sidecar", "critical"),
        ("sidecar", "critical"),
    ]
    assert "ZeroDivisionError" in entries[1]["exc"]
    assert "RuntimeError: uncaught" in entries[2]["exc"]


def test_a_start_failure_is_a_json_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        finished = subprocess.run(
            [sys.executable, "-m", "sidecar", "serve", "--listen", address],
            check=False,
            capture_output=True,
            timeout=30,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},  # the C core's own line aside
        )
    assert finished.returncode == 1
    entries = [json.loads(line) for line in finished.stderr.decode().splitlines()]
    assert [(e["level"], e["msg"].startswith(f"cannot listen on {address}")) for e in entries] == [
        ("error", True)
    ]
