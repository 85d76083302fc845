"""The call's `x-request-id` reaches the AI upstream on every attempt: the first, a
fallback to the next deployment, a retry round, and the embeddings request."""

from __future__ import annotations

from ai.fake_llm import FakeLLM, Step
from ai.helpers import ai_sidecar, config, model, text_of, user

from generated.integration.v1 import ai_pb2

ALIAS = """\
  chat:
    type: ai_alias
    retry_policy: {max_retries: 1, base_delay: 1ms, jitter: false}
    deployments: [primary, backup]
"""


async def test_the_callers_request_id_is_sent_on_every_attempt(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    # Round 1: primary 503, backup 503 (a fallback); round 2: primary answers (a retry).
    fake.then(Step(status=503))
    backup.then(Step(status=503))
    services = model("primary", fake.url) + model("backup", backup.url)
    async with ai_sidecar(config(services, ALIAS)) as ai:
        call = ai.stub.StreamComplete(
            ai_pb2.StreamCompleteRequest(target="chat", messages=user("hi")),
            metadata=(("x-request-id", "req-usage-7f3a"),),
            timeout=10,
        )
        messages = [message async for message in call]
    assert text_of(messages) == "Hello from the fake model."
    exchanges = [*fake.completions, *backup.completions]
    assert len(exchanges) == 3
    assert [e.request.headers.get("x-request-id") for e in exchanges] == ["req-usage-7f3a"] * 3


async def test_a_call_without_one_sends_the_id_the_sidecar_made_for_it(
    fake: FakeLLM, backup: FakeLLM
) -> None:
    fake.then(Step(status=503))
    services = model("primary", fake.url) + model("backup", backup.url)
    async with ai_sidecar(config(services, ALIAS)) as ai:
        await ai.stub.Complete(ai_pb2.CompleteRequest(target="chat", messages=user("hi")))
    sent = {e.request.headers.get("x-request-id") for e in (*fake.completions, *backup.completions)}
    (made,) = sent
    assert made  # one id, the same on both attempts


async def test_the_request_id_is_sent_with_embeddings(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        await ai.stub.Embed(
            ai_pb2.EmbedRequest(target="openai", inputs=["a text"]),
            metadata=(("x-request-id", "req-embed-91c2"),),
        )
    (exchange,) = [e for e in fake.http.exchanges if e.request.path == "/v1/embeddings"]
    assert exchange.request.headers.get("x-request-id") == "req-embed-91c2"
