"""The one backend registry: each (service type, backend) and the module declaring its spec.

A backend's module declares `SPEC` (a `BackendSpec`) next to its code; one line in
`sidecar.config.backends.BACKENDS` makes it known (to the config, which refuses other names,
and here). Modules are imported only when a service uses them, so
start-up time and memory depend only on the backends actually configured.

    built = build_backend(BuildContext(name, settings, policies, connection, clock))
    built.backend, built.features
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import cast

from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import ServiceBase
from sidecar.config.backends import BACKENDS
from sidecar.errors import FailedPrecondition

__all__ = ["BuiltBackend", "build_backend", "registered_backends", "spec_for"]


@dataclass(frozen=True, slots=True)
class BuiltBackend:
    """A backend built for one service, and what it can do."""

    backend: object
    features: frozenset[str]


def registered_backends() -> list[tuple[str, str]]:
    """Every (type, backend) pair the registry can build."""
    return sorted(BACKENDS)


def spec_for(type_name: str, backend: str) -> BackendSpec[ServiceBase]:
    """The spec of one backend (importing its module).

    Raises:
        FailedPrecondition: no such backend for that type (UNSUPPORTED_BACKEND).
    """
    module = BACKENDS.get((type_name, backend))
    if module is None:
        known = ", ".join(name for kind, name in sorted(BACKENDS) if kind == type_name)
        raise FailedPrecondition(
            f"no backend {backend!r} for service type {type_name!r} (known: {known or 'none'})",
            reason="UNSUPPORTED_BACKEND",
        )
    spec = importlib.import_module(module).SPEC
    assert isinstance(spec, BackendSpec) and (spec.type, spec.backend) == (type_name, backend)
    return cast(BackendSpec[ServiceBase], spec)


def build_backend(context: BuildContext[ServiceBase]) -> BuiltBackend:
    """Build the backend of one service (no network I/O happens here).

    Raises:
        FailedPrecondition: the settings name no registered backend (UNSUPPORTED_BACKEND).
        TypeError: the settings are not the spec's model, or the connection is missing.
    """
    settings = context.settings
    spec = spec_for(settings.type, settings.backend)  # type: ignore[attr-defined]
    if not isinstance(settings, spec.settings):
        raise TypeError(f"{spec.type}/{spec.backend} takes {spec.settings.__name__} settings")
    if spec.connection_type is not None and (
        context.connection is None or context.connection.type != spec.connection_type
    ):
        raise TypeError(f"{spec.type}/{spec.backend} needs a {spec.connection_type} connection")
    backend = spec.build(context)
    own = getattr(backend, "features", None)
    extra: frozenset[str] = own() if callable(own) else frozenset()
    return BuiltBackend(backend, spec.features | extra)
