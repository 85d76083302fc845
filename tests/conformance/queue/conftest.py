"""The table of queue backends the conformance suite runs against, and their fixtures.

Every backend is built the way the sidecar builds it: settings validated by the config model,
then its spec in the registry. A row names the backend and how it is set up:

- `memory`: on a `FakeClock`; a dead-letter queue is a second memory queue service, linked
  as the server links them (`link_dead_letters`);
- `sqs`: on an aws connection to moto in server mode (`tests/aws_server.py`), on a fresh
  queue per test (and a fresh dead-letter queue, named in the queue's RedrivePolicy).

`queues.make(fifo=..., dead_letter=...)` makes the test's queue (and its dead-letter queue);
`queues.elapse(seconds)` makes time pass: the fake clock's for memory, real seconds for moto
(whose visibility timeouts are real, so the suite uses 1 s ones). A test marked
`needs("fifo")` runs only on backends whose spec lists the feature. `queues.stale_receipts`
says whether the backend refuses an older receipt handle of a message it redelivered
(memory) or accepts it (SQS).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer, aws_address, moto_server

from sidecar.backends.queue import QueueBackend, ReceivedMessage, link_dead_letters
from sidecar.backends.registry import build_backend, spec_for
from sidecar.backends.spec import BuildContext
from sidecar.config import parse_config
from sidecar.config.backends import backend_names
from sidecar.connections.aws import AwsConnection, open_connection
from sidecar.testing import FakeClock

__all__ = ["aws_address", "moto_server"]

_names = itertools.count()
MAX_RECEIVE_COUNT = 2


@dataclass(frozen=True)
class Row:
    """One backend set up one way."""

    id: str
    backend: str
    moto: bool = False
    """Runs against the moto server, on an aws connection, on queues of the test's own."""
    stale_receipts: bool = True
    """Refuses (RECEIPT_INVALID) an older receipt handle of a message it delivered again."""

    @property
    def features(self) -> frozenset[str]:
        return spec_for("queue", self.backend).features


# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("memory", "memory"),
    Row("sqs", "sqs", moto=True, stale_receipts=False),
)
# ==== end of the backends ===================================================================


def rows() -> list[Row]:
    """The table, and a default row for every registered backend it does not name."""
    named = {row.backend for row in TABLE}
    return [*TABLE, *(Row(name, name) for name in backend_names("queue") if name not in named)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "queue_row" not in metafunc.fixturenames:
        return
    needs = {need for marker in metafunc.definition.iter_markers("needs") for need in marker.args}
    eligible = [row for row in rows() if needs <= row.features]
    metafunc.parametrize("queue_row", eligible, ids=[row.id for row in eligible])


@dataclass
class Queues:
    """Makes the test's queues on one row and makes time pass for them."""

    row: Row
    clock: FakeClock
    connection: AwsConnection | None = None
    made: list[QueueBackend] = field(default_factory=list)

    max_receive_count: int = MAX_RECEIVE_COUNT

    @property
    def stale_receipts(self) -> bool:
        return self.row.stale_receipts

    async def make(
        self, *, fifo: bool = False, dead_letter: bool = False, content_dedup: bool = False
    ) -> tuple[QueueBackend, QueueBackend | None]:
        """The test's queue, and its dead-letter queue (after MAX_RECEIVE_COUNT receives)."""
        if self.row.moto:
            return await self._make_sqs(fifo, dead_letter, content_dedup)
        return self._make_memory(fifo, dead_letter, content_dedup)

    def _make_memory(
        self, fifo: bool, dead_letter: bool, content_dedup: bool
    ) -> tuple[QueueBackend, QueueBackend | None]:
        own = [f"fifo: {str(fifo).lower()}"]
        if content_dedup:
            own.append("content_based_deduplication: true")
        services = {"dlq": f"{{type: queue, fifo: {str(fifo).lower()}}}"} if dead_letter else {}
        if dead_letter:
            own.append(f"max_receive_count: {MAX_RECEIVE_COUNT}, dead_letter: dlq")
        services["jobs"] = f"{{type: queue, backend: {self.row.backend}, {', '.join(own)}}}"
        text = "services:\n" + "".join(f"  {n}: {s}\n" for n, s in services.items())
        config = parse_config(text)
        built = {
            name: build_backend(
                BuildContext(
                    name, config.services[name], config.policies_for(name), None, self.clock
                )
            ).backend
            for name in services
        }
        link_dead_letters(built)
        self.made.extend(cast(QueueBackend, queue) for queue in built.values())
        return cast(QueueBackend, built["jobs"]), cast("QueueBackend | None", built.get("dlq"))

    async def _make_sqs(
        self, fifo: bool, dead_letter: bool, content_dedup: bool
    ) -> tuple[QueueBackend, QueueBackend | None]:
        assert self.connection is not None
        sqs: Any = await self.connection.client("sqs")
        suffix = ".fifo" if fifo else ""
        base = f"conformance-{os.getpid()}-{next(_names)}"
        attributes = {"VisibilityTimeout": "1"}
        if fifo:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = str(content_dedup).lower()
        dlq = None
        if dead_letter:
            made = await sqs.create_queue(QueueName=f"{base}-dlq{suffix}", Attributes=attributes)
            answer = await sqs.get_queue_attributes(
                QueueUrl=made["QueueUrl"], AttributeNames=["QueueArn"]
            )
            policy = {
                "deadLetterTargetArn": answer["Attributes"]["QueueArn"],
                "maxReceiveCount": str(MAX_RECEIVE_COUNT),
            }
            await sqs.create_queue(
                QueueName=f"{base}{suffix}",
                Attributes={**attributes, "RedrivePolicy": json.dumps(policy)},
            )
            dlq = self._build_sqs(f"{base}-dlq{suffix}")
        else:
            await sqs.create_queue(QueueName=f"{base}{suffix}", Attributes=attributes)
        return self._build_sqs(f"{base}{suffix}"), dlq

    def _build_sqs(self, queue: str) -> QueueBackend:
        config = parse_config(
            f"connections:\n  moto: {{type: aws, region: us-east-1}}\n"
            f"services:\n  jobs: {{type: queue, backend: sqs, connection: moto, queue: {queue}}}\n"
        )
        context = BuildContext(
            "jobs",
            config.services["jobs"],
            config.policies_for("jobs"),
            self.connection,
            self.clock,
        )
        backend = cast(QueueBackend, build_backend(context).backend)
        self.made.append(backend)
        return backend

    async def elapse(self, seconds: float) -> None:
        """Let `seconds` pass for the row's queues."""
        if self.row.moto:
            await asyncio.sleep(seconds + 0.2)  # moto's clock is the real one (ms resolution)
        else:
            await self.clock.advance(seconds)

    async def receive(
        self, queue: QueueBackend, count: int = 10, *, visibility: float | None = 1.0
    ) -> list[ReceivedMessage]:
        """What is visible now (no long poll)."""
        return await queue.receive(count, wait=0, visibility_timeout=visibility)


def _moto_section(server: MotoServer) -> str:
    return (
        f"{{type: aws, region: us-east-1, endpoint_url: {server.url}, "
        f"credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}}}"
    )


@pytest.fixture
async def queues(queue_row: Row, request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    harness = Queues(queue_row, FakeClock(1_000.0))
    if queue_row.moto:
        server: MotoServer = request.getfixturevalue("moto_server")
        config = parse_config(f"connections:\n  moto: {_moto_section(server)}\n")
        pool, timeouts = config.connection_policies("moto")
        endpoint: Any = config.connections["moto"]
        harness.connection = open_connection("moto", endpoint, pool, timeouts)
    yield harness
    for queue in harness.made:
        await queue.close()
    if harness.connection is not None:
        await harness.connection.close()
