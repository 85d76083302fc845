"""ListModels merges the configured targets with each upstream's `/models` (cached with a
TTL on the sidecar's clock), and start-up warns about configured models an upstream does not
list, without waiting for or failing on an upstream that is down."""

from __future__ import annotations

import logging
import socket

import pytest
from ai.fake_llm import FakeLLM
from ai.helpers import API_KEY, AISidecar, ai_sidecar, config, model

from generated.integration.v1 import ai_pb2
from sidecar.ai.catalog import DEFAULT_TTL
from sidecar.testing import FakeClock

ALIAS = """\
  chat:
    type: ai_alias
    retry_policy: {max_retries: 0}
    deployments: [primary, backup]
"""


def model_lists(fake: FakeLLM) -> int:
    return sum(1 for e in fake.http.exchanges if e.request.path == "/v1/models")


async def started(ai: AISidecar) -> None:
    check = ai.running.servicers["integration.v1.AIService"].model_check
    assert check is not None
    await check


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_list_models_adds_the_upstream_models_no_target_names(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.models = ["fake-model", "gpt-x", "dall-e-3"]
    services = config(model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(services) as ai:
        reply = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
    listed = [(m.target, m.kind, list(m.deployments), m.provider) for m in reply.models]
    assert listed == [
        ("chat", ai_pb2.MODEL_KIND_ALIAS, ["primary/fake-model", "backup/fake-model"], ""),
        ("backup", ai_pb2.MODEL_KIND_SERVICE, ["backup/fake-model"], "openai"),
        ("primary", ai_pb2.MODEL_KIND_SERVICE, ["primary/fake-model"], "openai"),
        ("primary/dall-e-3", ai_pb2.MODEL_KIND_UPSTREAM, ["primary/dall-e-3"], "openai"),
        ("primary/gpt-x", ai_pb2.MODEL_KIND_UPSTREAM, ["primary/gpt-x"], "openai"),
    ]


async def test_upstream_lists_are_cached_for_the_ttl(fake: FakeLLM) -> None:
    clock = FakeClock()
    async with ai_sidecar(config(model("primary", fake.url)), clock=clock) as ai:
        await started(ai)
        fake.models = ["fake-model", "new-model"]
        first = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
        asked = model_lists(fake)
        await clock.advance(DEFAULT_TTL + 1)
        second = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
    assert asked == 1  # the start-up check's list served the first ListModels
    assert model_lists(fake) == 2
    assert "primary/new-model" not in [m.target for m in first.models]
    assert "primary/new-model" in [m.target for m in second.models]


async def test_an_upstream_that_is_down_is_left_out_and_warned_about_nothing(
    fake: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake.models = ["fake-model", "gpt-x"]
    services = config(model("up", fake.url), model("down", closed_port_url()))
    with caplog.at_level(logging.INFO, logger="sidecar.ai"):
        async with ai_sidecar(services) as ai:
            await started(ai)
            reply = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
    assert [m.target for m in reply.models] == ["down", "up", "up/gpt-x"]
    ours = [r for r in caplog.records if r.name == "sidecar.ai"]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []
    assert any(
        r.getMessage() == "AI upstream did not list its models" and r.__dict__["service"] == "down"
        for r in ours
    )


async def test_start_up_warns_about_configured_models_the_upstream_does_not_list(
    fake: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake.models = ["fake-model"]
    alias = ALIAS.replace("[primary, backup]", "[primary, primary/retired-model]")
    with caplog.at_level(logging.WARNING, logger="sidecar.ai"):
        async with ai_sidecar(config(model("primary", fake.url), alias)) as ai:
            await started(ai)
    warned = [
        (r.__dict__["service"], r.__dict__["model"])
        for r in caplog.records
        if r.getMessage() == "configured AI model is not listed by its upstream"
    ]
    assert warned == [("primary", "retired-model")]


async def test_an_upstream_that_could_not_list_is_asked_again_after_a_pause() -> None:
    clock = FakeClock()
    url = closed_port_url()
    async with ai_sidecar(config(model("late", url)), clock=clock) as ai:
        await started(ai)  # the upstream is down: its list failed
        late = await FakeLLM(["x"], api_key=API_KEY).start(port=int(url.rsplit(":", 1)[1]))
        try:
            late.models = ["fake-model", "late-model"]
            before = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
            asked_before = model_lists(late)
            await clock.advance(31)
            after = await ai.stub.ListModels(ai_pb2.ListModelsRequest(), timeout=10)
        finally:
            await late.close()
    assert asked_before == 0  # within the pause, the failed upstream is not asked
    assert [m.target for m in before.models] == ["late"]
    assert [m.target for m in after.models] == ["late", "late/late-model"]
