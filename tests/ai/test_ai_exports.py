"""The public surface of the AI packages is pinned; no HTTP stack is imported unless a
configured service needs it, and no provider SDK ever (the `openai` and `anthropic` SDKs
cost 20 and 50 MB of resident memory and a third of a second of start-up)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import ROOT

import sidecar.ai
import sidecar.backends.ai


def test_routing_package_exports() -> None:
    assert sorted(sidecar.ai.__all__) == [
        "AIConfigError",
        "AIRouter",
        "Admission",
        "AliasService",
        "Deployment",
        "DeploymentRef",
        "ModelDefaults",
        "ModelService",
        "Route",
        "RoutedCall",
        "TargetInfo",
        "TokenLimits",
        "embed",
        "stream_chat",
    ]


def test_backend_package_exports_domain_types_only() -> None:
    assert sorted(sidecar.backends.ai.__all__) == [
        "ChatEnd",
        "ChatEvent",
        "ChatMessage",
        "ChatProvider",
        "ChatRequest",
        "ChatStream",
        "EmbedResult",
        "FinishReason",
        "ImagePart",
        "ResponseFormat",
        "Role",
        "Tool",
        "ToolCall",
        "ToolCallDelta",
        "ToolChoice",
        "UpstreamTimeouts",
        "Usage",
    ]


def _http_modules_after_serving(config: str | None) -> list[str]:
    """Which of the AI SDKs and the HTTP stack a fresh interpreter has loaded once a server
    on `config` (None: the embedded defaults) started and stopped."""
    script = (
        "import asyncio, json, sys\n"
        "from sidecar.testing import serve_for_test\n"
        "async def main():\n"
        f"    async with serve_for_test({config!r}):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "names = ('openai', 'anthropic', 'httpx2')\n"
        "print(json.dumps(sorted(m for m in names if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_serving_the_echo_default_imports_no_ai_sdk() -> None:
    assert _http_modules_after_serving(None) == []


def test_serving_openai_and_anthropic_services_imports_neither_sdk() -> None:
    config = (
        "services:\n"
        "  gpt: {type: ai_model, provider: openai, endpoint: 'http://127.0.0.1:9/v1'}\n"
        "  claude: {type: ai_model, provider: anthropic, endpoint: 'http://127.0.0.1:9'}\n"
    )
    assert _http_modules_after_serving(config) == ["httpx2"]
