"""Fixtures: fake LLM upstreams on free ports (OpenAI, Anthropic and TGI formats at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ai.fake_llm import FakeLLM
from ai.helpers import API_KEY


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM(api_key=API_KEY).start()
    yield server
    await server.close()


@pytest.fixture
async def backup() -> AsyncIterator[FakeLLM]:
    """A second, independent upstream (the fallback deployment)."""
    server = await FakeLLM(["Backup", "answer."], api_key=API_KEY).start()
    yield server
    await server.close()
