"""`Transforms`: every named transform and schema, built once from the configuration, and
the three things callers do with them: transform, validate, list."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from sidecar.config import Config
from sidecar.config.transform import (
    BUILTIN_TRANSFORMS,
    VALIDATE_PREFIX,
    SchemaConfig,
    StepConfig,
    TransformConfig,
    TransformLimits,
    XmlToJsonStep,
)
from sidecar.errors import InvalidArgument, NotFound

from ._payload import CONTENT_TYPES, Budget, Kind, Payload, content_kind, too_deep
from ._protobuf import JsonToProtobuf, Pools, ProtobufToJson
from ._runner import Runner
from ._schema import Report, Schema, Validate, compile_schemas
from ._xml import XmlToJson

__all__ = ["Output", "TransformInfo", "Transforms", "build_transforms"]

T = TypeVar("T")
_DEFAULT_LIMITS: Final = TransformLimits()


class _Step(Protocol):
    @property
    def reads(self) -> Kind: ...
    @property
    def writes(self) -> Kind: ...
    @property
    def label(self) -> str: ...
    def apply(self, payload: Payload, budget: Budget) -> Payload: ...


@dataclass(frozen=True)
class Output:
    """A transform's output and its media type."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class TransformInfo:
    """What ListTransforms says about one transform."""

    name: str
    description: str
    steps: tuple[str, ...]
    input_content_type: str
    output_content_type: str
    max_input_bytes: int
    max_depth: int


@dataclass(frozen=True)
class _Chain:
    name: str
    description: str
    steps: tuple[_Step, ...]
    limits: TransformLimits

    def info(self) -> TransformInfo:
        return TransformInfo(
            name=self.name,
            description=self.description,
            steps=tuple(step.label for step in self.steps),
            input_content_type=CONTENT_TYPES[self.steps[0].reads],
            output_content_type=CONTENT_TYPES[self.steps[-1].writes],
            max_input_bytes=self.limits.max_input_bytes,
            max_depth=self.limits.max_depth,
        )

    def run(self, data: bytes, budget: Budget) -> Output:
        payload = Payload(self.steps[0].reads, raw=data)
        for step in self.steps:
            try:
                payload = step.apply(payload, budget)
            except RecursionError:  # a validator or encoder deeper than the stack allows
                raise too_deep(budget.max_depth, budget.metadata) from None
        return Output(payload.to_bytes(), CONTENT_TYPES[payload.kind])


class Transforms:
    """The transforms and schemas callers may name."""

    def __init__(self, chains: Mapping[str, _Chain], schemas: Mapping[str, Schema]) -> None:
        self._chains = dict(chains)
        self._schemas = dict(schemas)
        self._runner = Runner()

    def describe(self) -> list[TransformInfo]:
        """Every transform, sorted by name."""
        return [self._chains[name].info() for name in sorted(self._chains)]

    def schema_names(self) -> list[str]:
        return sorted(self._schemas)

    async def transform(
        self, name: str, data: bytes, content_type: str = "", *, field: str = "input"
    ) -> Output:
        """Run the transform `name` over `data`.

        Raises:
            NotFound: no such transform (TARGET_NOT_FOUND).
            InvalidArgument: the input is too large, too deep, not what the transform reads,
                or fails a validate step (VALUE_TOO_LARGE, TRANSFORM_FAILED,
                SCHEMA_VIOLATION, INVALID_REQUEST for a content type that does not fit).
            ResourceExhausted: the time limit ran out (TRANSFORM_LIMIT_EXCEEDED).
        """
        chain = self._chains.get(name)
        if chain is None:
            raise NotFound(
                f"no transform named {name!r} is configured",
                reason="TARGET_NOT_FOUND",
                metadata={"transform": name},
            )
        reads = chain.steps[0].reads
        if content_type and content_kind(content_type) != reads:
            raise InvalidArgument(
                f"content_type: transform {name!r} reads {CONTENT_TYPES[reads]}, "
                f"not {content_type[:100]!r}",
                reason="INVALID_REQUEST",
                metadata={"field": "content_type", "transform": name},
            )
        metadata = {"field": field, "transform": name}
        _check_size(data, chain.limits, metadata)
        return await self._runner.run(
            lambda budget: chain.run(data, budget),
            time_limit=chain.limits.timeout,
            max_depth=chain.limits.max_depth,
            metadata=metadata,
        )

    async def validate(self, schema: str, data: bytes, *, field: str = "json") -> Report:
        """Every violation of the JSON document `data` against `schema`.

        Raises:
            NotFound: no such schema (TARGET_NOT_FOUND).
            InvalidArgument: `data` is too large, too deep or not JSON.
            ResourceExhausted: the time limit ran out (TRANSFORM_LIMIT_EXCEEDED).
        """
        compiled = self._schema(schema)
        metadata = {"field": field, "schema": schema}
        _check_size(data, compiled.config, metadata)

        def work(budget: Budget) -> Report:
            return compiled.report(Payload("json", raw=data).json(budget), budget)

        return await self._run_schema(compiled, work, metadata)

    async def check(self, schema: str, data: bytes, *, field: str) -> None:
        """Raise unless the JSON document `data` matches `schema` (SCHEMA_VIOLATION); the
        other errors as `validate`."""
        compiled = self._schema(schema)
        metadata = {"field": field, "schema": schema}
        _check_size(data, compiled.config, metadata)

        def work(budget: Budget) -> None:
            compiled.check(Payload("json", raw=data).json(budget), budget)

        await self._run_schema(compiled, work, metadata)

    async def _run_schema(
        self, compiled: Schema, work: Callable[[Budget], T], metadata: dict[str, str]
    ) -> T:
        return await self._runner.run(
            work,
            time_limit=compiled.config.timeout,
            max_depth=compiled.config.max_depth,
            metadata=metadata,
        )

    def _schema(self, name: str) -> Schema:
        compiled = self._schemas.get(name)
        if compiled is None:
            raise NotFound(
                f"no schema named {name!r} is configured",
                reason="TARGET_NOT_FOUND",
                metadata={"schema": name},
            )
        return compiled


def _check_size(data: bytes, limits: TransformLimits, metadata: Mapping[str, str]) -> None:
    if len(data) > limits.max_input_bytes:
        raise InvalidArgument(
            f"{metadata['field']}: is {len(data)} bytes; the limit is {limits.max_input_bytes}",
            reason="VALUE_TOO_LARGE",
            metadata={**metadata, "limit": "max_input_bytes"},
        )


def build_transforms(config: Config) -> Transforms:
    """Every configured transform and schema, and the built-in ones, ready to run (files
    were read and schemas checked when the configuration loaded)."""
    schemas = compile_schemas(config.schemas)
    pools = Pools()

    def step(spec: StepConfig) -> _Step:
        if spec.xml_to_json is not None:
            return XmlToJson(spec.xml_to_json)
        if spec.json_to_protobuf is not None:
            options = spec.json_to_protobuf
            return JsonToProtobuf(
                options, *pools.message_class(options.descriptor_set, options.message)
            )
        if spec.protobuf_to_json is not None:
            to_json = spec.protobuf_to_json
            return ProtobufToJson(
                to_json, *pools.message_class(to_json.descriptor_set, to_json.message)
            )
        assert spec.validate_ is not None
        return Validate(schemas[spec.validate_])

    def chain(name: str, config: TransformConfig) -> _Chain:
        steps: Sequence[_Step] = [step(spec) for spec in config.steps]
        return _Chain(name, config.description, tuple(steps), config)

    chains = {name: chain(name, transform) for name, transform in config.transforms.items()}
    for name in BUILTIN_TRANSFORMS:
        chains[name] = _Chain(name, "", (XmlToJson(XmlToJsonStep()),), _DEFAULT_LIMITS)
    for name, compiled in schemas.items():
        chains[VALIDATE_PREFIX + name] = _Chain(
            VALIDATE_PREFIX + name, "", (Validate(compiled),), _limits_of(compiled.config)
        )
    return Transforms(chains, schemas)


def _limits_of(schema: SchemaConfig) -> TransformLimits:
    return TransformLimits(
        max_input_bytes=schema.max_input_bytes, max_depth=schema.max_depth, timeout=schema.timeout
    )
