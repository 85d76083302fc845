"""The registry of service types in `sidecar.config.services`."""

from __future__ import annotations

from typing import Literal, get_args

import pytest
from pydantic import Field

from sidecar.config import SERVICE_TYPES, CacheServiceConfig, ConfigError, ServiceBase, parse_config
from sidecar.config._common import ConfigModel
from sidecar.config.services import ServiceModel, service_types


def test_service_types_in_declaration_order() -> None:
    assert SERVICE_TYPES[:2] == ("cache", "pubsub")
    assert {"ai_model", "ai_alias"} <= set(SERVICE_TYPES)
    assert service_types(ServiceModel) == SERVICE_TYPES


def test_every_service_model_subclasses_service_base() -> None:
    assert all(issubclass(model, ServiceBase) for model in get_args(ServiceModel))


def test_unknown_type_lists_every_registered_type() -> None:
    with pytest.raises(ConfigError, match="expected one of: " + ", ".join(SERVICE_TYPES)):
        parse_config("services:\n  x: {type: nosuch}\n", environ={})


class _SecondCache(ServiceBase):
    """Claims the `cache` tag a second time."""

    type: Literal["cache"] = Field(default="cache", description="Service type.")


class _NotAService(ConfigModel):
    """Lacks the shared service settings."""

    type: Literal["other"] = Field(default="other", description="Service type.")


class _Untagged(ServiceBase):
    """Has no `type` literal."""


def test_a_single_registered_type_is_found() -> None:
    assert service_types(CacheServiceConfig) == ("cache",)


@pytest.mark.parametrize(
    ("union", "message"),
    [
        (CacheServiceConfig | _SecondCache, "service type 'cache' is declared by two"),
        (CacheServiceConfig | _NotAService, "must subclass ServiceBase"),
        (CacheServiceConfig | _Untagged, "_Untagged must declare type: Literal"),
    ],
)
def test_malformed_registrations_fail_at_import(union: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        service_types(union)
