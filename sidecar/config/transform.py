"""The `schemas:` and `transforms:` sections: JSON Schemas and named chains of conversions,
which TransformService runs by name and HttpService, PubSubService and QueueService apply
where data moves.

    schemas:
      order:
        schema:                       # inline (YAML is JSON's superset) or `file: order.json`
          type: object
          required: [id, items]
          properties:
            id: {type: string}
            items: {type: array, minItems: 1}
    transforms:
      orders-xml:
        description: The ERP's XML orders, as checked JSON.
        steps: [xml_to_json, "validate:order"]
      order-to-proto:
        steps:
          - json_to_protobuf: {descriptor_set: /etc/sidecar/shop.binpb, message: shop.v1.Order}

Every file is read and every schema checked here, at load time, so `check-config` finds a
broken schema, a missing message type or a dangling reference before the sidecar starts.
Besides the configured transforms, `xml_to_json` (default options) and `validate:<schema>`
for every schema are always available by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, FilePath, PrivateAttr, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ._common import ConfigModel, ServiceName
from ._units import Bytes, DurationSeconds, MiB

__all__ = [
    "BUILTIN_TRANSFORMS",
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_TIMEOUT",
    "JsonToProtobufStep",
    "ProtobufToJsonStep",
    "SchemaConfig",
    "StepConfig",
    "TransformConfig",
    "TransformLimits",
    "XmlToJsonStep",
    "message_names",
    "transform_names",
    "transform_reference_errors",
]

BUILTIN_TRANSFORMS: Final = ("xml_to_json",)
"""Transforms available by name without configuration (with default options and limits)."""
VALIDATE_PREFIX: Final = "validate:"
MAX_INPUT_BYTES: Final = 64 * MiB
MAX_DEPTH: Final = 100
"""The highest `max_depth`: protobuf's own parser stops at 100 levels."""
MAX_TIMEOUT: Final = 60.0
_MAX_STEPS: Final = 16
_MAX_SCHEMA_FILE: Final = 4 * MiB
_MAX_DESCRIPTOR_FILE: Final = 16 * MiB

Kind = Literal["xml", "json", "protobuf"]


class TransformLimits(ConfigModel):
    """What one run may cost; each limit answers the caller with a clear status."""

    max_input_bytes: Bytes = Field(
        default=1 * MiB,
        le=MAX_INPUT_BYTES,
        description="Largest input; larger is INVALID_ARGUMENT (VALUE_TOO_LARGE). "
        "Default 1MiB, at most 64MiB.",
    )
    max_depth: int = Field(
        default=64,
        ge=1,
        le=MAX_DEPTH,
        description="Deepest nesting of XML elements or JSON arrays and objects; deeper is "
        "INVALID_ARGUMENT (VALUE_TOO_LARGE). Default 64, at most 100.",
    )
    timeout: DurationSeconds = Field(
        default=2.0,
        le=MAX_TIMEOUT,
        description="Time one run may take, waiting for a free worker included; past it "
        "RESOURCE_EXHAUSTED (TRANSFORM_LIMIT_EXCEEDED). Default 2s, at most 60s.",
    )


class SchemaConfig(TransformLimits):
    """A JSON Schema (draft 2020-12), inline or from a file; its limits are those of
    `validate:<name>` and of PubSubService/QueueService validation."""

    schema_: Mapping[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="The schema itself, as YAML or JSON. Not with file.",
    )
    file: FilePath | None = Field(
        default=None, description="A JSON file holding the schema (at most 4MiB). Not with schema."
    )
    formats: bool = Field(
        default=False,
        description="Check `format` (date-time, email, ipv4, uuid ...) as an assertion; "
        "default false: an annotation only, as draft 2020-12 says.",
    )

    _document: Mapping[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _load(self) -> SchemaConfig:
        if (self.schema_ is None) == (self.file is None):
            raise PydanticCustomError("schema_source", "set exactly one of schema or file")
        document = self.schema_ if self.schema_ is not None else _read_json(self.file)
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(document)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.path) or "(root)"
            raise PydanticCustomError(
                "invalid_schema",
                "not a valid draft 2020-12 JSON Schema at {where}: {problem}",
                {"where": where, "problem": exc.message[:200]},
            ) from None
        self._document = document
        return self

    @property
    def document(self) -> Mapping[str, Any]:
        """The schema, loaded and checked."""
        return self._document


def _read_json(path: Path | None) -> Mapping[str, Any]:
    assert path is not None
    if path.stat().st_size > _MAX_SCHEMA_FILE:
        raise PydanticCustomError("schema_file", "the schema file is larger than 4MiB")
    try:
        document = json.loads(path.read_bytes())
    except ValueError as exc:
        raise PydanticCustomError(
            "schema_file", "{file} is not JSON: {problem}", {"file": str(path), "problem": str(exc)}
        ) from None
    if not isinstance(document, Mapping):
        raise PydanticCustomError("schema_file", "a schema file must hold a JSON object")
    return document


class XmlToJsonStep(ConfigModel):
    """XML to JSON: attributes as `@_name`, repeated elements as lists, text beside
    attributes or children under `#text`. DTDs, entity declarations and external
    references are refused."""

    namespaces: Literal["keep", "strip"] = Field(
        default="keep",
        description="keep: names as written (`soap:Body`) and xmlns declarations as "
        "attributes (`@_xmlns:soap`); strip: local names only. Default keep.",
    )
    always_list: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Element names that are lists even when they occur once (names as "
        "they appear in the output). Default none.",
    )


class _ProtobufStep(ConfigModel):
    descriptor_set: FilePath = Field(
        description="A FileDescriptorSet (`protoc --include_imports --descriptor_set_out`, "
        "`buf build -o`). Well-known types missing from it are taken from protobuf itself. "
        "Required."
    )
    message: str = Field(
        min_length=1,
        max_length=512,
        description="The message type's full name (`shop.v1.Order`). Required.",
    )

    @model_validator(mode="after")
    def _message_exists(self) -> _ProtobufStep:
        if self.message not in message_names(self.descriptor_set):
            raise PydanticCustomError(
                "unknown_message",
                "{file} has no message type {message}",
                {"file": str(self.descriptor_set), "message": repr(self.message)},
            )
        return self


class JsonToProtobufStep(_ProtobufStep):
    """JSON (the proto3 JSON mapping) to the binary encoding of `message`."""

    unknown_fields: Literal["reject", "ignore"] = Field(
        default="reject",
        description="A JSON field the message does not have: reject (INVALID_ARGUMENT) or "
        "ignore. Default reject.",
    )


class ProtobufToJsonStep(_ProtobufStep):
    """The binary encoding of `message` to JSON (the proto3 JSON mapping)."""

    field_names: Literal["json", "proto"] = Field(
        default="json",
        description="json: lowerCamelCase JSON names; proto: names as in the .proto file. "
        "Default json.",
    )
    print_defaults: bool = Field(
        default=False,
        description='Print fields that hold their default value (0, "", false, empty '
        "lists) too. Default false.",
    )


class StepConfig(ConfigModel):
    """One step: exactly one of its keys. A string is a short form: `xml_to_json` (default
    options) or `validate:<schema>`."""

    xml_to_json: XmlToJsonStep | None = Field(
        default=None, description="XML to JSON, with these options ({} for the defaults)."
    )
    validate_: ServiceName | None = Field(
        default=None, alias="validate", description="A schema under schemas: to check JSON."
    )
    json_to_protobuf: JsonToProtobufStep | None = Field(
        default=None, description="JSON to a message's binary encoding."
    )
    protobuf_to_json: ProtobufToJsonStep | None = Field(
        default=None, description="A message's binary encoding to JSON."
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data == "xml_to_json":
                return {"xml_to_json": {}}
            if data.startswith(VALIDATE_PREFIX):
                return {"validate": data.removeprefix(VALIDATE_PREFIX)}
            raise PydanticCustomError(
                "unknown_step",
                "unknown step {step}: use xml_to_json, validate:<schema> or a mapping "
                "(xml_to_json, validate, json_to_protobuf, protobuf_to_json)",
                {"step": repr(data)},
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> StepConfig:
        if len(self.model_fields_set) != 1:
            raise PydanticCustomError(
                "one_step",
                "a step is exactly one of xml_to_json, validate, json_to_protobuf, "
                "protobuf_to_json",
            )
        return self

    @property
    def kinds(self) -> tuple[Kind, Kind]:
        """What the step reads and what it writes."""
        if self.xml_to_json is not None:
            return "xml", "json"
        if self.json_to_protobuf is not None:
            return "json", "protobuf"
        if self.protobuf_to_json is not None:
            return "protobuf", "json"
        return "json", "json"


class TransformConfig(TransformLimits):
    """A named chain of steps, run in order; each step reads what the one before wrote."""

    description: str = Field(
        default="", max_length=1024, description="Shown by ListTransforms. Default empty."
    )
    steps: list[StepConfig] = Field(
        min_length=1, max_length=_MAX_STEPS, description="1 to 16 steps. Required."
    )

    @model_validator(mode="after")
    def _steps_fit(self) -> TransformConfig:
        for index in range(1, len(self.steps)):
            wrote, reads = self.steps[index - 1].kinds[1], self.steps[index].kinds[0]
            if wrote != reads:
                raise PydanticCustomError(
                    "steps_do_not_fit",
                    "step {index} reads {reads} but the step before writes {wrote}",
                    {"index": index, "reads": reads, "wrote": wrote},
                )
        return self


def message_names(path: Path) -> frozenset[str]:
    """The full names of every message type (nested ones too) in a descriptor set file."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    if path.stat().st_size > _MAX_DESCRIPTOR_FILE:
        raise PydanticCustomError("descriptor_set", "the descriptor set is larger than 16MiB")
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except DecodeError:
        raise PydanticCustomError(
            "descriptor_set", "{file} is not a FileDescriptorSet", {"file": str(path)}
        ) from None

    def walk(prefix: str, messages: Any) -> Iterator[str]:
        for message in messages:
            name = f"{prefix}.{message.name}" if prefix else message.name
            yield name
            yield from walk(name, message.nested_type)

    return frozenset(name for file in files.file for name in walk(file.package, file.message_type))


def transform_names(
    transforms: Mapping[str, TransformConfig], schemas: Mapping[str, SchemaConfig]
) -> frozenset[str]:
    """Every name a caller may use: the configured transforms and the built-in ones."""
    return frozenset(
        (*transforms, *BUILTIN_TRANSFORMS, *(VALIDATE_PREFIX + name for name in schemas))
    )


def transform_reference_errors(
    transforms: Mapping[str, TransformConfig],
    schemas: Mapping[str, SchemaConfig],
    services: Mapping[str, Any],
) -> list[InitErrorDetails]:
    """Every `validate` step names a configured schema, no transform takes a built-in name,
    and every service's `request_transform` / `response_transform` names a transform."""
    errors: list[InitErrorDetails] = []

    def refused(where: tuple[str | int, ...], name: str, message: str) -> None:
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError("unknown_reference", message, {"name": repr(name)}),
                loc=where,
                input=name,
            )
        )

    for name, transform in transforms.items():
        if name in BUILTIN_TRANSFORMS:
            refused(("transforms", name), name, "{name} is a built-in transform; pick another")
        for index, step in enumerate(transform.steps):
            if step.validate_ is not None and step.validate_ not in schemas:
                refused(
                    ("transforms", name, "steps", index, "validate"),
                    step.validate_,
                    "{name} is not a schema under schemas:",
                )
    known = transform_names(transforms, schemas)
    for name, service in services.items():
        for field in ("request_transform", "response_transform"):
            value = getattr(service, field, None)
            if value is not None and value not in known:
                refused(
                    ("services", name, field),
                    value,
                    "{name} is not a transform (configured under transforms:, xml_to_json, "
                    "or validate:<schema>)",
                )
    return errors
