"""What every config model shares: the base class, the bounded field types, name checks.

Three choices run through every model of the package, and they live in `ConfigModel`:

- `extra="forbid"`: a misspelt key is an error, never a silently ignored setting.
- `frozen=True`: the config is read by many tasks at once and must not drift.
- A section left empty in YAML (`keepalive:` with every line commented out) means defaults.

The bounds (`AtLeastOne`, `Fraction`, ...) are shared by the full policy models and their
partial overrides, so the two cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from ._units import Bytes

__all__ = [
    "AtLeastOne",
    "AtLeastZero",
    "BearerToken",
    "ConfigModel",
    "Fraction",
    "GrpcMessageSize",
    "MethodName",
    "Multiplier",
    "PositiveRate",
    "ServiceName",
    "section_fields",
]

AtLeastOne = Annotated[int, Field(ge=1)]
AtLeastZero = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveRate = Annotated[float, Field(gt=0)]
Multiplier = Annotated[float, Field(ge=1)]
# grpc takes message sizes as a C int.
GrpcMessageSize = Annotated[Bytes, Field(le=2**31 - 1)]

_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_METHOD_NAME = re.compile(r"/[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*")


def _check_service_name(name: str) -> str:
    if not _SERVICE_NAME.fullmatch(name):
        raise PydanticCustomError(
            "invalid_service_name",
            "invalid service name {name}: use 1-63 lowercase letters, digits, '_' or '-', "
            "starting with a letter",
            {"name": repr(name)},
        )
    return name


def _check_method_name(name: str) -> str:
    if name != "*" and not _METHOD_NAME.fullmatch(name):
        raise PydanticCustomError(
            "invalid_method_name",
            "invalid method {name}: use a full gRPC method name such as "
            "'/integration.v1.CacheService/Get', or '*' for every method",
            {"name": repr(name)},
        )
    return name


def _check_token(token: SecretStr) -> SecretStr:
    if not token.get_secret_value().strip():
        raise PydanticCustomError("empty_token", "must not be empty")
    return token


ServiceName = Annotated[str, AfterValidator(_check_service_name)]
"""A service instance name: what a request's `target` names, so it is kept URL- and label-safe."""

MethodName = Annotated[str, AfterValidator(_check_method_name)]
"""A full gRPC method name (`/package.Service/Method`) or `*`."""

BearerToken = Annotated[SecretStr, AfterValidator(_check_token)]
"""A non-empty secret; an empty one would let `Authorization: Bearer ` through."""


@cache
def section_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields that hold a nested section (model, mapping or list) and do not accept null.

    Args:
        model: the model class to inspect.

    Returns:
        The names of those fields.
    """
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or get_origin(
            annotation
        ) in (dict, Mapping, list, tuple):
            names.add(name)
    return frozenset(names)


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys fail, instances are immutable, and the
    validator is built on first use, so the models of unused types cost nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, data: Any) -> Any:
        """Treat `keepalive:` with nothing under it (YAML null) like an absent section.

        That is what a file looks like once every line of a section is commented out, and
        the user means "defaults", not "this section must be a mapping".
        """
        if not isinstance(data, dict):
            return data
        sections = section_fields(cls)
        return {k: v for k, v in data.items() if not (v is None and k in sections)}
