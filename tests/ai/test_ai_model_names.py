"""A caller's model name never changes where the huggingface provider sends its key.

The `{model}` endpoint template takes the model of a `service/model` target. Each attack
runs through the real server against a local listener that records every request: the
upstream the service points at, and a second one standing for the attacker's host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from ai.fake_http import FakeHTTPServer, Request, Responder
from ai.fake_llm import FakeLLM
from ai.helpers import ai_sidecar, config, model, user
from support import error_info

from generated.integration.v1 import ai_pb2
from sidecar.config import ConfigError, parse_config


@pytest.fixture
async def attacker() -> AsyncIterator[FakeHTTPServer]:
    async def answer(request: Request, respond: Responder) -> None:
        await respond.send_json(200, {"stolen": True})

    server = await FakeHTTPServer(answer).start()
    yield server
    await server.close()


def hf_service(url: str, extra: str = "") -> str:
    return model("hf", url, provider="huggingface", path="/hf/models/{model}", extra=extra)


def _attacks(port: int) -> list[str]:
    return [
        "../../../admin/secret",
        "x?inject=1#",
        f"127.0.0.1:{port}/#",
        "a/../../admin",
        "a/./b",
        "a//b",
        "/a",
        "a/",
        "%2e%2e/admin",
        "a%2Fb",
        "user@host",
        "a\\b",
        "a b",
        "a\nb",
        ".",
        "..",
    ]


async def _refused(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info(caught.value).metadata["field"] == "target"


async def test_model_names_that_would_change_the_url_are_refused_and_nothing_is_sent(
    fake: FakeLLM, attacker: FakeHTTPServer
) -> None:
    async with ai_sidecar(config(hf_service(fake.url))) as ai:
        for name in _attacks(attacker.port):
            target = f"hf/{name}"
            await _refused(
                ai.stub.Complete(ai_pb2.CompleteRequest(target=target, messages=user("hi")))
            )
            await _refused(ai.stub.Embed(ai_pb2.EmbedRequest(target=target, inputs=["a"])))
            stream = ai.stub.StreamComplete(
                ai_pb2.StreamCompleteRequest(target=target, messages=user("hi"))
            )
            await _refused(stream.read())
    assert [e.request.path for e in fake.http.exchanges] == []
    assert attacker.exchanges == []


async def test_an_organisation_model_id_is_sent_as_its_own_path_segments(fake: FakeLLM) -> None:
    async with ai_sidecar(config(hf_service(fake.url))) as ai:
        await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="hf/meta-llama/Llama-3.1-8B_v2", messages=user("hi"))
        )
    sent = fake.completions[0].request
    assert sent.path == "/hf/models/meta-llama/Llama-3.1-8B_v2"
    assert sent.headers["authorization"] == "Bearer test-key"


async def test_a_models_list_restricts_the_targets(fake: FakeLLM) -> None:
    service = hf_service(fake.url, extra="models: [meta-llama/Llama-3-8B]")
    async with ai_sidecar(config(service)) as ai:
        await _refused(
            ai.stub.Complete(ai_pb2.CompleteRequest(target="hf/other/model", messages=user("hi")))
        )
        await ai.stub.Complete(
            ai_pb2.CompleteRequest(target="hf/meta-llama/Llama-3-8B", messages=user("hi"))
        )
    assert [e.request.path for e in fake.http.exchanges] == ["/hf/models/meta-llama/Llama-3-8B"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://{model}.models.invalid/generate",
        "http://user:{model}@models.invalid/generate",
        "{model}://models.invalid/generate",
        "http://models.invalid/generate?model={model}",
        "http://models.invalid/generate#{model}",
        "http://models.invalid/models/x{model}",
        "http://models.invalid/models/{model}.bin",
    ],
)
def test_model_outside_whole_path_segments_is_refused_at_config_load(endpoint: str) -> None:
    text = (
        "services:\n  tgi:\n    type: ai_model\n    provider: huggingface\n"
        f"    endpoint: '{endpoint}'\n    model: gpt2\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert "services.tgi.endpoint" in dict(caught.value.problems)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ("model: '../admin'", "model"),
        ("model: gpt2\n    models: ['ok/model', 'a?b']", "models"),
    ],
)
def test_huggingface_model_names_in_the_config_follow_the_same_rule(
    settings: str, field: str
) -> None:
    text = (
        "services:\n  tgi:\n    type: ai_model\n    provider: huggingface\n"
        f"    endpoint: http://tgi.invalid/models/{{model}}\n    {settings}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert f"services.tgi.{field}" in dict(caught.value.problems)


def test_the_host_template_attack_cannot_be_configured() -> None:
    """The issue's first attack: with `{model}` in the host, the target
    `tgi/127.0.0.1:PORT/#` sent the key to PORT. Such an endpoint no longer loads."""
    with pytest.raises(ConfigError):
        parse_config(
            config(
                "  tgi:\n    type: ai_model\n    provider: huggingface\n"
                "    endpoint: http://{model}.models.invalid/generate\n    model: gpt2\n"
                "    auth: {type: bearer, token: hf-secret}\n"
            ),
            environ={},
        )
