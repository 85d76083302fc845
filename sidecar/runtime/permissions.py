"""The targets the caller of the running RPC may name, and the one check of them.

The inbound permission check (`sidecar.interceptors.permissions`) knows the caller and the
method, and sets what targets that caller may name in this method; the servicers check the
target they resolved, in the one place every servicer resolves a target
(`sidecar.servicers._common.serve_target`). The restriction rides in a contextvar: each RPC
runs in its own task, so it never leaks from one call to another.

Usage:

    restrict_targets(TargetRestriction("checkout", frozenset({"sessions"})))   # inbound
    permit_target("sessions")                                                 # servicer
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from sidecar.errors import PermissionDenied

__all__ = ["PERMISSION_DENIED", "TargetRestriction", "permit_target", "restrict_targets"]

PERMISSION_DENIED = "PERMISSION_DENIED"
"""The ErrorInfo reason of every refusal by a permission policy."""


@dataclass(frozen=True, slots=True)
class TargetRestriction:
    """The targets `policy` (a caller's name) lets the running call name."""

    policy: str
    targets: frozenset[str]


_restriction: ContextVar[TargetRestriction | None] = ContextVar(
    "sidecar_target_restriction", default=None
)


def restrict_targets(restriction: TargetRestriction | None) -> None:
    """Limit the targets of the RPC running in this task (None: any target)."""
    _restriction.set(restriction)


def permit_target(target: str) -> None:
    """Raise PermissionDenied unless the running call may name `target` (a configured
    service's name, the default one already resolved for an empty `target`)."""
    restriction = _restriction.get()
    if restriction is None or target in restriction.targets:
        return
    raise PermissionDenied(
        f"caller {restriction.policy!r} may not call target {target!r}",
        reason=PERMISSION_DENIED,
        metadata={"policy": restriction.policy, "target": target},
    )
