"""`ByType`: validate a `type:`-tagged section with the model of its own type only.

A pydantic discriminated union builds the validator of every member when the model holding it
is built, so a config naming one cache would pay for every service and connection type (most
of the cost, in time and memory, of starting the sidecar). `ByType` reads the tag itself and
hands the value to that one model, which builds its validator on first use (`ConfigModel`
defers building). The errors stay those of the discriminated union: the same error types and
context for a missing or unknown tag, and the member's own errors under the tag, where the
union puts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError, core_schema

__all__ = ["ByType", "rebased"]

_TAG = "type"


@dataclass(frozen=True)
class ByType:
    """`Annotated[A | B | ..., ByType(...)]`: a value is checked by the member its `type` names.

    Args:
        union: the members, each a model with a single-value `type: Literal[...]` field;
            error messages list their tags in this order.
    """

    union: object
    _models: dict[str, type[BaseModel]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        models: dict[str, type[BaseModel]] = {}
        for model in get_args(self.union) or (self.union,):
            (tag,) = get_args(model.model_fields[_TAG].annotation)
            models[tag] = model
        object.__setattr__(self, "_models", models)

    @property
    def tags(self) -> tuple[str, ...]:
        """Every member's tag, in the union's order."""
        return tuple(self._models)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Deliberately not `handler(source)`: that would build the whole union.
        return core_schema.no_info_plain_validator_function(self._validate)

    def _validate(self, value: Any) -> BaseModel:
        if isinstance(value, Mapping):
            tag = value.get(_TAG)
        elif isinstance(value, BaseModel):
            tag = getattr(value, _TAG, None)
        else:
            raise PydanticKnownError("model_attributes_type")
        if tag is None:
            raise PydanticKnownError("union_tag_not_found", {"discriminator": f"'{_TAG}'"})
        model = self._models.get(tag) if isinstance(tag, str) else None
        if model is None:
            raise PydanticKnownError(
                "union_tag_invalid",
                {
                    "discriminator": f"'{_TAG}'",
                    "tag": str(tag),
                    "expected_tags": ", ".join(f"'{name}'" for name in self._models),
                },
            )
        try:
            return model.model_validate(value)
        except ValidationError as error:
            # Raised from here, the errors are placed under this value's location by pydantic.
            raise ValidationError.from_exception_data(
                model.__name__, rebased(error, (tag,))
            ) from None


def rebased(error: ValidationError, prefix: Iterable[str | int]) -> list[InitErrorDetails]:
    """Re-home a nested model's errors under `prefix`, keeping type, message and context.

    Every error is re-raised as a custom error carrying its original type name and message,
    because known pydantic error types cannot always be rebuilt from `errors()` output.
    """
    where = tuple(prefix)
    return [
        InitErrorDetails(
            type=PydanticCustomError(detail["type"], detail["msg"], detail.get("ctx")),
            loc=(*where, *detail["loc"]),
            input=detail["input"],
        )
        for detail in error.errors()
    ]
