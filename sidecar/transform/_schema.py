"""JSON Schema validation (draft 2020-12) of configured schemas, every violation with its
JSON path.

A schema may `$ref` another configured schema by its `$id`; nothing is ever fetched, so a
`$ref` to anything else fails when it is reached (FAILED_PRECONDITION: the schema, not the
data, is at fault).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from sidecar.config.transform import SchemaConfig
from sidecar.errors import FailedPrecondition, InvalidArgument

from ._payload import Budget, Kind, Payload

# jsonschema and referencing are imported when the first schema is compiled: a sidecar with
# no schema configured does not load them (tests/startup keeps it so).
if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

    _Keyword = Callable[[Any, Any, Any, Any], Iterator[ValidationError] | None]

__all__ = ["MAX_VIOLATIONS", "Report", "Schema", "Validate", "Violation", "compile_schemas"]

MAX_VIOLATIONS: Final = 100
"""Violations listed at most; the rest are counted as `truncated`."""
_MAX_MESSAGE: Final = 256
_PATHS_IN_ERROR: Final = 20
"""JSON paths named in a SCHEMA_VIOLATION error's metadata (the status must stay small)."""


_running = threading.local()
"""The budget of the run on this worker thread, for the keyword functions to tick."""


def _ticking(keyword: _Keyword) -> _Keyword:
    def ticked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        budget: Budget | None = getattr(_running, "budget", None)
        if budget is not None:
            budget.tick()
        return keyword(validator, value, instance, schema)

    return ticked


@functools.cache
def _ticking_validator() -> Any:
    """Draft 2020-12, looking at the run's clock at every keyword it applies: a large
    document that matches (and so yields no error to look between) still stops on time."""
    from jsonschema import Draft202012Validator, validators

    return validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
        Draft202012Validator,
        {name: _ticking(keyword) for name, keyword in Draft202012Validator.VALIDATORS.items()},
    )


@dataclass(frozen=True)
class Violation:
    """One way a document fails its schema."""

    path: str
    message: str
    keyword: str
    schema_path: str


@dataclass(frozen=True)
class Report:
    """The violations of one document (empty: it matches)."""

    violations: tuple[Violation, ...]
    truncated: bool

    @property
    def valid(self) -> bool:
        return not self.violations


def _violation(error: ValidationError) -> Violation:
    message = error.message
    if len(message) > _MAX_MESSAGE:  # it may quote a long value of the document
        message = message[: _MAX_MESSAGE - 1] + "…"
    return Violation(
        path=error.json_path,
        message=message,
        keyword=str(error.validator),
        schema_path="/" + "/".join(str(part) for part in error.relative_schema_path),
    )


@dataclass(frozen=True)
class Schema:
    """A configured schema, compiled once."""

    name: str
    validator: Validator
    config: SchemaConfig

    def report(self, value: Any, budget: Budget) -> Report:
        """Every violation of `value` (at most MAX_VIOLATIONS), within the budget's time."""
        from referencing.exceptions import Unresolvable  # loaded with the schema's validator

        found: list[Violation] = []
        _running.budget = budget
        try:
            for error in self.validator.iter_errors(value):
                if len(found) == MAX_VIOLATIONS:
                    return Report(tuple(found), truncated=True)
                found.append(_violation(error))
                budget.check()
        except Unresolvable as exc:
            raise FailedPrecondition(
                f"schema {self.name!r} has a $ref that is not a configured schema: {exc}"[:300],
                reason="TRANSFORM_FAILED",
                metadata={"schema": self.name},
            ) from None
        finally:
            _running.budget = None
        budget.check()
        return Report(tuple(found), truncated=False)

    def check(self, value: Any, budget: Budget) -> None:
        """Raise SCHEMA_VIOLATION (INVALID_ARGUMENT) unless `value` matches."""
        report = self.report(value, budget)
        if report.valid:
            return
        first = report.violations[0]
        count = f"{len(report.violations)}{'+' if report.truncated else ''}"
        noun = "violation" if count == "1" else "violations"
        raise InvalidArgument(
            f"does not match schema {self.name!r} ({count} {noun}); "
            f"first at {first.path}: {first.message}",
            reason="SCHEMA_VIOLATION",
            metadata={
                **budget.metadata,
                "schema": self.name,
                "violations": count,
                "paths": " ".join(v.path for v in report.violations[:_PATHS_IN_ERROR]),
            },
        )


@dataclass(frozen=True)
class Validate:
    """The `validate:<schema>` step: the payload goes on unchanged when it matches."""

    schema: Schema

    reads: ClassVar[Kind] = "json"
    writes: ClassVar[Kind] = "json"

    @property
    def label(self) -> str:
        return f"validate:{self.schema.name}"

    def apply(self, payload: Payload, budget: Budget) -> Payload:
        self.schema.check(payload.json(budget), budget)
        return payload


def compile_schemas(configs: Mapping[str, SchemaConfig]) -> dict[str, Schema]:
    """One validator per schema, each able to `$ref` the others by their `$id`."""
    if not configs:
        return {}
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry: Registry[Any] = Registry().with_resources(
        (str(config.document["$id"]), Resource.from_contents(config.document, DRAFT202012))
        for config in configs.values()
        if isinstance(config.document.get("$id"), str)
    )
    return {
        name: Schema(
            name,
            _ticking_validator()(
                config.document,
                registry=registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER if config.formats else None,
            ),
            config,
        )
        for name, config in configs.items()
    }
