"""The public surface of the AI packages is pinned, and no SDK is imported unless a
configured service needs it (`import openai` alone takes about a second)."""

from __future__ import annotations

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


def test_serving_the_echo_default_imports_no_ai_sdk() -> None:
    script = (
        "import asyncio, sys\n"
        "from sidecar.testing import serve_for_test\n"
        "async def main():\n"
        "    async with serve_for_test():\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('openai', 'anthropic', 'httpx2') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"
