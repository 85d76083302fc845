"""The limits that keep hostile input from taking the process down: input size, nesting
depth and time per run; and the work runs off the event loop, on a bounded set of
workers."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from transform.helpers import transforms_from

from sidecar.errors import InvalidArgument, ResourceExhausted
from sidecar.transform import WORKERS
from sidecar.transform._runner import Runner

CONFIG = """
schemas:
  any:
    max_input_bytes: 1KiB
    max_depth: 4
    schema: {}
transforms:
  small:
    max_input_bytes: 100
    steps: [xml_to_json]
  shallow:
    max_depth: 3
    steps: [xml_to_json]
  hurried:
    timeout: 1ms
    max_input_bytes: 8MiB
    steps: [xml_to_json]
  big:
    timeout: 60s  # the default 2 s is not what this measures; a busy 2-core CI is slow
    max_input_bytes: 8MiB
    steps: [xml_to_json]
"""


def _items(count: int) -> bytes:
    return b"<r>" + b'<item a="1" b="2">text</item>' * count + b"</r>"


async def test_input_over_max_input_bytes_is_value_too_large() -> None:
    transforms = transforms_from(CONFIG)
    await transforms.transform("small", b"<r>" + b"x" * 93 + b"</r>")
    with pytest.raises(InvalidArgument) as caught:
        await transforms.transform("small", b"<r>" + b"x" * 94 + b"</r>")
    assert (caught.value.reason, caught.value.metadata["limit"]) == (
        "VALUE_TOO_LARGE",
        "max_input_bytes",
    )
    with pytest.raises(InvalidArgument, match="is 1025 bytes; the limit is 1024"):
        await transforms.validate("any", b" " * 1025)


async def test_nesting_past_max_depth_is_value_too_large() -> None:
    transforms = transforms_from(CONFIG)
    await transforms.transform("shallow", b"<a><b><c/></b></a>")
    await transforms.validate("any", b'[[[{"a": 1}]]]')
    cases = [
        transforms.transform("shallow", b"<a><b><c><d/></c></b></a>"),
        transforms.validate("any", b'[[[{"a": []}]]]'),
        transforms.transform("xml_to_json", b"<a>" * 200_000),  # stops at the 65th
        transforms.validate("any", b"[" * 1000),
    ]
    for case in cases:
        with pytest.raises(InvalidArgument) as caught:
            await case
        assert (caught.value.reason, caught.value.metadata["limit"]) == (
            "VALUE_TOO_LARGE",
            "max_depth",
        )


async def test_json_nested_past_the_stack_is_refused_not_crashed() -> None:
    data = b"[" * 500_000 + b"]" * 500_000
    big = transforms_from("schemas:\n  s: {schema: {}, max_input_bytes: 1MiB}\n")
    with pytest.raises(InvalidArgument) as caught:
        await big.validate("s", data)
    assert caught.value.reason == "VALUE_TOO_LARGE"


async def test_a_run_past_its_time_limit_is_resource_exhausted_and_frees_its_worker() -> None:
    transforms = transforms_from(CONFIG)
    document = _items(100_000)  # about 3 MiB: far longer than 1 ms
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(transforms.transform("hurried", document) for _ in range(WORKERS + 2)),
        return_exceptions=True,
    )
    for outcome in outcomes:
        assert isinstance(outcome, ResourceExhausted), outcome
        assert outcome.reason == "TRANSFORM_LIMIT_EXCEEDED"
    # The workers noticed the time was up and stopped: a small run gets one at once.
    await transforms.transform("xml_to_json", b"<a/>")
    assert time.monotonic() - started < 2.0


async def test_the_event_loop_keeps_running_during_a_large_transform() -> None:
    transforms = transforms_from(CONFIG)
    document = _items(200_000)  # about 6 MiB of XML
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    output = await transforms.transform("big", document)
    took = time.monotonic() - started
    done.set()
    await ticker
    assert len(json.loads(output.data)["r"]["item"]) == 200_000
    assert max(gaps) < took / 3, f"the loop stalled {max(gaps):.3f}s of a {took:.3f}s run"


async def test_runs_wait_for_a_free_worker_within_their_time_limit() -> None:
    """The runner itself, with work that holds its worker until released."""
    runner = Runner()
    release = threading.Event()

    def hold(_budget: object) -> str:
        release.wait(10)
        return "held"

    metadata = {"transform": "t"}
    held = [
        asyncio.ensure_future(runner.run(hold, time_limit=10, max_depth=1, metadata=metadata))
        for _ in range(WORKERS)
    ]
    await asyncio.sleep(0.05)
    with pytest.raises(ResourceExhausted) as caught:
        await runner.run(lambda _: "late", time_limit=0.1, max_depth=1, metadata=metadata)
    assert caught.value.message == "no transform worker became free within the time limit"
    waiting = asyncio.ensure_future(
        runner.run(lambda _: "next", time_limit=10, max_depth=1, metadata=metadata)
    )
    release.set()
    assert await asyncio.gather(*held) == ["held"] * WORKERS
    assert await waiting == "next"


async def test_validation_of_a_large_matching_document_stops_at_its_deadline() -> None:
    """A document that matches yields no error to look at the clock between: the validator
    itself looks, at every keyword it applies."""
    from sidecar.transform._payload import Budget

    transforms = transforms_from(
        "schemas:\n  rows:\n    schema: {type: array, items: {type: object, "
        "properties: {a: {type: integer, minimum: 0}}}}\n"
    )
    schema = transforms._schema("rows")
    rows = [{"a": index} for index in range(100_000)]
    metadata = {"schema": "rows"}

    started = time.monotonic()
    assert schema.report(rows, Budget(time.monotonic() + 60, 64, metadata)).valid
    whole = time.monotonic() - started

    started = time.monotonic()
    with pytest.raises(ResourceExhausted):
        schema.report(rows, Budget(time.monotonic() - 1, 64, metadata))
    assert time.monotonic() - started < whole / 10
