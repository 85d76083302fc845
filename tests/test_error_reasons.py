"""Every error reason the code can raise is listed in `ErrorReason` in common.proto, so a
client can switch on the enum without meeting a reason it has never heard of."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc

from generated.integration.v1 import common_pb2

SIDECAR = Path(__file__).resolve().parent.parent / "sidecar"
PREFIX = "ERROR_REASON_"


def _proto_reasons() -> set[str]:
    return {
        name.removeprefix(PREFIX)
        for name in common_pb2.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
        if name != f"{PREFIX}UNSPECIFIED"
    }


def _reason_literals(tree: ast.AST) -> set[str]:
    """String constants given as a reason: `reason="X"`, `reason = "X"` (also inside a tuple
    assignment such as `kind, reason = Error, "X"`), `reason: ClassVar[str] = "X"` class
    attributes and `reason: str = "X"` defaults."""
    found: set[str] = set()

    def take(node: ast.expr | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            take(node.value)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "reason":
                    take(node.value)
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for name, value in zip(target.elts, node.value.elts, strict=False):
                        if isinstance(name, ast.Name) and name.id == "reason":
                            take(value)
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == "reason":
                take(node.value)
        elif isinstance(node, ast.arguments):
            positional = node.posonlyargs + node.args
            for arg, default in zip(positional[-len(node.defaults) :], node.defaults, strict=False):
                if arg.arg == "reason":
                    take(default)
            for arg, kw_default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
                if arg.arg == "reason":
                    take(kw_default)
    return found


def _raised_reasons() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in sorted(SIDECAR.rglob("*.py")):
        for reason in _reason_literals(ast.parse(path.read_text(), str(path))):
            where.setdefault(reason, []).append(str(path.relative_to(SIDECAR.parent)))
    return where


def test_every_reason_the_code_raises_is_in_the_proto() -> None:
    raised = _raised_reasons()
    missing = {reason: files for reason, files in raised.items() if reason not in _proto_reasons()}
    assert not missing, f"reasons raised but not in ErrorReason (common.proto): {missing}"


def test_the_scan_finds_reasons_in_every_form() -> None:
    source = (
        'f(reason="A")\nreason = "B"\nkind, reason = E, "C"\n'
        'def g(reason="D"): ...\ndef h(*, reason: str = "E"): ...\n'
        'class R:\n    reason: ClassVar[str] = "F"\n'
    )
    assert _reason_literals(ast.parse(source)) == {"A", "B", "C", "D", "E", "F"}
    assert len(_raised_reasons()) > 20  # the scan reaches the code, not an empty folder


def test_a_rejection_maps_by_its_nearest_listed_ancestor() -> None:
    from sidecar.interceptors.error_mapping import status_for
    from sidecar.resilience.errors import CoolingDownError

    status = status_for(CoolingDownError(retry_after=2.0))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # not UNAVAILABLE, the fallback
