"""The JSON log handler: access lines leave in batches, every other line at once, in order."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from support import eventually

from sidecar.observability.logging import ACCESS_LOGGER, BatchingHandler, JsonFormatter


def record(name: str, msg: str, level: int = logging.INFO, **fields: object) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, level, "", 0, msg, (), None, extra=fields)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def handler(stream: io.StringIO) -> Iterator[BatchingHandler]:
    handler = BatchingHandler(stream, flush_interval=3600, max_waiting=1024)
    handler.setFormatter(JsonFormatter())
    yield handler
    handler.close()


def test_access_lines_wait_and_any_other_line_takes_them_out_first(
    handler: BatchingHandler, stream: io.StringIO
) -> None:
    handler.handle(record(ACCESS_LOGGER, "rpc", method="/a", status="OK"))
    handler.handle(record(ACCESS_LOGGER, "rpc", method="/b", status="OK"))
    assert stream.getvalue() == ""
    handler.handle(record("sidecar.server", "stopped"))
    assert [(e["logger"], e.get("method")) for e in lines(stream)] == [
        (ACCESS_LOGGER, "/a"),
        (ACCESS_LOGGER, "/b"),
        ("sidecar.server", None),
    ]


def test_waiting_lines_leave_once_the_buffer_is_full(
    handler: BatchingHandler, stream: io.StringIO
) -> None:
    for i in range(20):  # ~100 characters each: the 1024-character limit is passed at ~10
        handler.handle(record(ACCESS_LOGGER, "rpc", method=f"/m{i}", request_id="r" * 20))
    written = lines(stream)
    assert 8 <= len(written) < 20
    assert [e["method"] for e in written] == [f"/m{i}" for i in range(len(written))]


def test_close_writes_what_waits(handler: BatchingHandler, stream: io.StringIO) -> None:
    handler.handle(record(ACCESS_LOGGER, "rpc", method="/last"))
    handler.close()
    assert [e["method"] for e in lines(stream)] == ["/last"]


async def test_a_waiting_line_leaves_within_the_flush_interval(stream: io.StringIO) -> None:
    handler = BatchingHandler(stream, flush_interval=0.05)
    handler.setFormatter(JsonFormatter())
    try:
        handler.handle(record(ACCESS_LOGGER, "rpc", method="/soon"))
        await eventually(lambda: bool(stream.getvalue()))
        assert [e["method"] for e in lines(stream)] == ["/soon"]
    finally:
        handler.close()


def test_lines_carry_extra_fields_in_order_and_a_utc_timestamp() -> None:
    line = JsonFormatter().format(record(ACCESS_LOGGER, "rpc", method="/x", duration_ms=1.5))
    entry = json.loads(line)
    assert list(entry) == ["ts", "level", "logger", "msg", "method", "duration_ms"]
    assert str(entry["ts"]).endswith("Z") and len(str(entry["ts"])) == len(
        "2026-01-01T00:00:00.000Z"
    )
