"""GenerateImage and Transcribe: round trips through the sidecar against the fake upstream,
whose image and transcription endpoints are first proven to speak the `openai` SDK's wire
format (the SDK is the client, and the request it sent is the reference the sidecar's
request is compared with)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import openai
import pytest
from ai.fake_llm import FakeLLM, Step, fake_image
from ai.helpers import API_KEY, ai_sidecar, config, model
from support import error_info

from generated.integration.v1 import ai_pb2
from sidecar.ai import limits

ALIAS = """\
  media:
    type: ai_alias
    retry_policy: {max_retries: 0}
    deployments: [primary, backup]
"""
AUDIO = bytes(range(256)) * 40  # 10 kB of "audio"


def sdk(fake: FakeLLM) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key=API_KEY, max_retries=0)


def transcribe_messages(
    config_: ai_pb2.TranscribeConfig, audio: bytes, piece: int = 3000
) -> list[ai_pb2.TranscribeRequest]:
    pieces = [audio[i : i + piece] for i in range(0, len(audio), piece)] or [b""]
    first = ai_pb2.TranscribeRequest(config=config_, audio=pieces[0])
    return [first] + [ai_pb2.TranscribeRequest(audio=p) for p in pieces[1:]]


async def stream_of(
    messages: Iterable[ai_pb2.TranscribeRequest],
) -> AsyncIterator[ai_pb2.TranscribeRequest]:
    for message in messages:
        yield message


async def test_the_fake_answers_the_sdk_images_and_transcriptions(fake: FakeLLM) -> None:
    client = sdk(fake)
    try:
        images = await client.images.generate(
            model="fake-model", prompt="a red fox", n=2, response_format="b64_json"
        )
        text = await client.audio.transcriptions.create(
            model="fake-model", file=("speech.mp3", AUDIO, "audio/mpeg"), language="en"
        )
    finally:
        await client.close()
    assert images.data is not None
    assert [base64.b64decode(i.b64_json or "") for i in images.data] == [
        fake_image("a red fox", 0),
        fake_image("a red fox", 1),
    ]
    assert text.text.startswith(f"heard {len(AUDIO)} bytes")
    assert fake.uploads[0]["file"] == ("speech.mp3", "audio/mpeg", AUDIO)


async def test_generate_image_sends_what_the_sdk_sends_and_returns_bytes(fake: FakeLLM) -> None:
    client = sdk(fake)
    try:
        await client.images.generate(
            model="fake-model", prompt="a red fox", n=2, size="512x512", response_format="b64_json"
        )
    finally:
        await client.close()
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        reply = await ai.stub.GenerateImage(
            ai_pb2.GenerateImageRequest(
                target="openai",
                prompt="a red fox",
                n=2,
                size="512x512",
                format=ai_pb2.IMAGE_FORMAT_BYTES,
            ),
            timeout=10,
        )
    by_sdk, by_sidecar = (json.loads(e.request.body) for e in fake.media)
    assert by_sidecar == by_sdk
    assert [image.data for image in reply.images] == [
        fake_image("a red fox", 0),
        fake_image("a red fox", 1),
    ]
    assert reply.images[0].revised_prompt == "a red fox (revised)"
    assert (reply.deployment, reply.model) == ("openai/fake-model", "fake-model")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (3, 200)


async def test_generate_image_returns_urls_when_asked(fake: FakeLLM) -> None:
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        reply = await ai.stub.GenerateImage(
            ai_pb2.GenerateImageRequest(
                target="openai", prompt="a fox", format=ai_pb2.IMAGE_FORMAT_URL
            ),
            timeout=10,
        )
    assert len(reply.images) == 1
    assert reply.images[0].url.startswith("https://images.example/")
    assert reply.images[0].data == b""
    assert json.loads(fake.media[0].request.body)["n"] == 1


async def test_transcribe_streams_audio_in_and_uploads_what_the_sdk_uploads(
    fake: FakeLLM,
) -> None:
    client = sdk(fake)
    try:
        expected = await client.audio.transcriptions.create(
            model="fake-model",
            file=("speech.mp3", AUDIO, "audio/mpeg"),
            response_format="json",
            language="en",
            prompt="names: Ada",
            temperature=0.2,
        )
    finally:
        await client.close()
    settings = ai_pb2.TranscribeConfig(
        target="openai",
        filename="speech.mp3",
        content_type="audio/mpeg",
        language="en",
        prompt="names: Ada",
        temperature=0.2,
    )
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        reply = await ai.stub.Transcribe(
            stream_of(transcribe_messages(settings, AUDIO)), timeout=10
        )
    by_sdk, by_sidecar = fake.uploads
    assert by_sidecar == by_sdk
    assert by_sidecar["file"] == ("speech.mp3", "audio/mpeg", AUDIO)
    assert reply.text == expected.text
    assert reply.deployment == "openai/fake-model"
    assert reply.usage.input_tokens == 1 + len(AUDIO) // 1000


async def test_an_upstream_500_falls_back_along_the_alias(fake: FakeLLM, backup: FakeLLM) -> None:
    fake.then(Step(status=500), Step(status=500))
    services = config(model("primary", fake.url), model("backup", backup.url), ALIAS)
    async with ai_sidecar(services) as ai:
        image = await ai.stub.GenerateImage(
            ai_pb2.GenerateImageRequest(target="media", prompt="a fox"), timeout=10
        )
        text = await ai.stub.Transcribe(
            stream_of(transcribe_messages(ai_pb2.TranscribeConfig(target="media"), AUDIO)),
            timeout=10,
        )
    assert image.deployment == "backup/fake-model"
    assert image.images[0].data == fake_image("a fox", 0)
    assert text.deployment == "backup/fake-model"
    assert (len(fake.media), len(backup.media)) == (2, 2)
    assert backup.uploads[0]["file"] == ("audio.wav", "application/octet-stream", AUDIO)


@pytest.mark.parametrize("provider", ["echo", "anthropic"])
async def test_providers_without_the_api_answer_failed_precondition(
    fake: FakeLLM, provider: str
) -> None:
    async with ai_sidecar(config(model("other", fake.url, provider=provider))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as image:
            await ai.stub.GenerateImage(
                ai_pb2.GenerateImageRequest(target="other", prompt="a fox"), timeout=10
            )
        with pytest.raises(grpc.aio.AioRpcError) as text:
            await ai.stub.Transcribe(
                stream_of(transcribe_messages(ai_pb2.TranscribeConfig(target="other"), AUDIO)),
                timeout=10,
            )
    for caught in (image.value, text.value):
        assert caught.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(caught).reason == "UNSUPPORTED_OPERATION"
        assert error_info(caught).metadata["provider"] == provider
    assert fake.media == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * (limits.MAX_IMAGE_PROMPT + 1)}, "prompt"),
        ({"n": limits.MAX_IMAGES + 1}, "n"),
        ({"n": -1}, "n"),
        ({"size": "big"}, "size"),
        ({"size": "1" * (limits.MAX_IMAGE_OPTION + 1)}, "size"),
        ({"quality": "q" * (limits.MAX_IMAGE_OPTION + 1)}, "quality"),
        ({"format": 99}, "format"),
        ({"user": "u" * 257}, "user"),
    ],
)
async def test_image_requests_out_of_bounds_are_invalid(
    fake: FakeLLM, fields: dict[str, Any], field: str
) -> None:
    request = ai_pb2.GenerateImageRequest(target="openai", prompt="a fox")
    for name, value in fields.items():
        setattr(request, name, value)
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.GenerateImage(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == field
    assert fake.media == []


async def test_transcribe_refuses_audio_over_the_bound_and_malformed_streams(
    fake: FakeLLM,
) -> None:
    settings = ai_pb2.TranscribeConfig(target="openai")
    piece = b"\0" * (3 * 1024 * 1024)
    too_much = transcribe_messages(settings, piece * 9, piece=len(piece))  # 27 MiB
    too_many = [ai_pb2.TranscribeRequest(config=settings, audio=b"a")] + [
        ai_pb2.TranscribeRequest(audio=b"a")
    ] * limits.MAX_AUDIO_MESSAGES
    cases: list[tuple[list[ai_pb2.TranscribeRequest], grpc.StatusCode, str]] = [
        (too_much, grpc.StatusCode.RESOURCE_EXHAUSTED, "audio"),
        (too_many, grpc.StatusCode.RESOURCE_EXHAUSTED, "audio"),
        ([ai_pb2.TranscribeRequest(audio=b"a")], grpc.StatusCode.INVALID_ARGUMENT, "config"),
        (
            [ai_pb2.TranscribeRequest(config=settings), ai_pb2.TranscribeRequest(config=settings)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "config",
        ),
        ([ai_pb2.TranscribeRequest(config=settings)], grpc.StatusCode.INVALID_ARGUMENT, "audio"),
        (
            [
                ai_pb2.TranscribeRequest(
                    config=ai_pb2.TranscribeConfig(target="openai", temperature=1.5), audio=b"a"
                )
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.temperature",
        ),
    ]
    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        for messages, code, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ai.stub.Transcribe(stream_of(messages), timeout=30)
            assert (caught.value.code(), error_info(caught.value).metadata["field"]) == (
                code,
                field,
            )
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert error_info(caught.value).reason == "VALUE_TOO_LARGE"
    assert fake.uploads == []


async def test_an_unknown_target_is_refused_before_the_audio_is_read(fake: FakeLLM) -> None:
    async def first_then_never() -> AsyncIterator[ai_pb2.TranscribeRequest]:
        yield ai_pb2.TranscribeRequest(config=ai_pb2.TranscribeConfig(target="nope"), audio=b"a")
        await asyncio.Event().wait()  # the rest of the audio never comes

    async with ai_sidecar(config(model("openai", fake.url))) as ai:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ai.stub.Transcribe(first_then_never(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "TARGET_NOT_FOUND"
