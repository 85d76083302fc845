"""Fixtures of the AI-provider conformance suite: the local fake upstream."""

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
