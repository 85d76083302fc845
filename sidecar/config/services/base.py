"""`ServiceBase`: what every service type shares, whatever its `type`.

A service type is a model that subclasses `ServiceBase` and adds:

- `type: Literal["<type>"] = Field(default="<type>", description="Service type.")`, the tag
  of the `ServiceConfig` discriminated union;
- `backend: str`, checked against the backends listed for its `type` in
  `sidecar.config.backends` (whose spec `sidecar.backends.registry` builds);
- its own settings, each with a default and a `description=` that states it.

See `sidecar.config.services` for how to register the new model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from .._common import ConfigModel
from ..backends import backend_names
from ..policies import (
    BulkheadOverride,
    CircuitBreakerOverride,
    ConnectionPoolOverride,
    RateLimitOverride,
    RetryPolicyOverride,
    TimeoutsOverride,
)

__all__ = ["ServiceBase", "backend_settings_hold"]


class ServiceBase(ConfigModel):
    """Settings every service type shares: the default flag and the policy overrides."""

    default: bool = Field(
        default=False,
        description="Serve requests with an empty target for this service type; at most one "
        "service per type may set it. Default false.",
    )
    retry_policy: RetryPolicyOverride | None = Field(
        default=None, description="Partial override of integration.retry_policy."
    )
    circuit_breaker: CircuitBreakerOverride | None = Field(
        default=None, description="Partial override of integration.circuit_breaker."
    )
    rate_limit: RateLimitOverride | None = Field(
        default=None,
        description="Partial override of integration.rate_limiting.default; an explicit null "
        "turns an inherited limit off for this service.",
    )
    bulkhead: BulkheadOverride | None = Field(
        default=None, description="Partial override of integration.bulkhead."
    )
    timeouts: TimeoutsOverride | None = Field(
        default=None, description="Partial override of integration.timeouts."
    )
    connection_pool: ConnectionPoolOverride | None = Field(
        default=None,
        validation_alias=AliasChoices("connection_pool", "pool"),
        description="Partial override of integration.connection_pools.default; `pool` is "
        "another name for it (the specification's).",
    )

    @field_validator("backend", check_fields=False)
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        """Only a backend listed for the service's type (AI types have none: no field)."""
        names = backend_names(cls.model_fields["type"].default)
        if value not in names:
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": " or ".join(repr(name) for name in names)},
            )
        return value


def backend_settings_hold(
    settings: BaseModel,
    backend: str,
    only_for: Mapping[str, Sequence[str]],
    required: Sequence[str] = (),
    why: str = "",
) -> None:
    """Refuse settings written for another backend of the type (`only_for`: backend -> the
    settings only it takes), and `required` settings of this backend left unset (None).

    Raises:
        PydanticCustomError: the first problem, naming every setting involved.
    """
    for other, names in only_for.items():
        misplaced = sorted(n for n in names if other != backend and n in settings.model_fields_set)
        if misplaced:
            raise PydanticCustomError(
                "setting_of_other_backend",
                "{names} {verb} only for backend: {other}",
                {
                    "names": ", ".join(misplaced),
                    "verb": "is" if len(misplaced) == 1 else "are",
                    "other": other,
                },
            )
    missing = [name for name in required if getattr(settings, name) is None]
    if missing:
        raise PydanticCustomError(
            "backend_settings_missing",
            "backend: {backend} needs {names}" + (": " + why if why else ""),
            {"backend": backend, "names": " and ".join(missing)},
        )
