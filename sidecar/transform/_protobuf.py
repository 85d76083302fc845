"""JSON <-> Protobuf for message types from a descriptor set, with protobuf's own proto3
JSON mapping (`json_format`).

Each descriptor set file gets a pool of its own, so two files may hold different versions
of one type. Well-known types (Timestamp, Duration, Struct, wrappers, Any ...) that a set
was built without (`protoc` without `--include_imports`) come from protobuf itself. An
`Any` resolves against the same pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from google.protobuf import (
    any_pb2,
    api_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    source_context_pb2,
    struct_pb2,
    timestamp_pb2,
    type_pb2,
    wrappers_pb2,
)
from google.protobuf.message import DecodeError, EncodeError, Message

from sidecar.config.transform import JsonToProtobufStep, ProtobufToJsonStep

from ._payload import Budget, Kind, Payload, failed, too_deep

__all__ = ["JsonToProtobuf", "Pools", "ProtobufToJson"]

_WELL_KNOWN = (
    any_pb2,
    api_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    source_context_pb2,
    struct_pb2,
    timestamp_pb2,
    type_pb2,
    wrappers_pb2,
)
"""Imported so that the default pool holds every well-known type's file."""


class Pools:
    """One descriptor pool per descriptor set file, loaded once."""

    def __init__(self) -> None:
        self._pools: dict[Path, descriptor_pool.DescriptorPool] = {}

    def message_class(self, path: Path, name: str) -> tuple[type[Message], Any]:
        pool = self._pools.get(path)
        if pool is None:
            pool = self._pools[path] = _load(path)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name)), pool


def _load(path: Path) -> descriptor_pool.DescriptorPool:
    files = {
        file.name: file
        for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    }
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:  # dependencies first; a set is a DAG of at most a few files
        if name in added:
            return
        added.add(name)
        file = files.get(name)
        if file is None:  # a well-known type the set was built without
            file = descriptor_pb2.FileDescriptorProto()
            descriptor_pool.Default().FindFileByName(name).CopyToProto(file)
        for dependency in file.dependency:
            add(dependency)
        pool.Add(file)

    for name in files:
        add(name)
    return pool


@dataclass(frozen=True)
class JsonToProtobuf:
    """The `json_to_protobuf` step: a JSON value to the message's binary encoding."""

    options: JsonToProtobufStep
    message: type[Message]
    pool: Any

    reads: ClassVar[Kind] = "json"
    writes: ClassVar[Kind] = "protobuf"

    @property
    def label(self) -> str:
        return f"json_to_protobuf:{self.options.message}"

    def apply(self, payload: Payload, budget: Budget) -> Payload:
        value = payload.json(budget)
        message = self.message()
        try:
            json_format.ParseDict(
                value,
                message,
                ignore_unknown_fields=self.options.unknown_fields == "ignore",
                descriptor_pool=self.pool,
                max_recursion_depth=budget.max_depth,
            )
            encoded = message.SerializeToString(deterministic=True)
        except (json_format.ParseError, EncodeError, ValueError, TypeError) as exc:
            if "recursion" in str(exc).lower():
                raise too_deep(budget.max_depth, budget.metadata) from None
            raise failed(
                f"the JSON is not a {self.options.message}: {exc}", budget.metadata
            ) from None
        return Payload("protobuf", raw=encoded)


@dataclass(frozen=True)
class ProtobufToJson:
    """The `protobuf_to_json` step: the message's binary encoding to a JSON value."""

    options: ProtobufToJsonStep
    message: type[Message]
    pool: Any

    reads: ClassVar[Kind] = "protobuf"
    writes: ClassVar[Kind] = "json"

    @property
    def label(self) -> str:
        return f"protobuf_to_json:{self.options.message}"

    def apply(self, payload: Payload, budget: Budget) -> Payload:
        assert payload.raw is not None
        message = self.message()
        try:
            message.ParseFromString(payload.raw)
            value = json_format.MessageToDict(
                message,
                preserving_proto_field_name=self.options.field_names == "proto",
                always_print_fields_with_no_presence=self.options.print_defaults,
                descriptor_pool=self.pool,
            )
        except DecodeError as exc:
            raise failed(
                f"the input is not a {self.options.message}: {exc}", budget.metadata
            ) from None
        except (json_format.Error, ValueError, TypeError) as exc:  # an Any of unknown type
            raise failed(
                f"the {self.options.message} has no JSON form: {exc}", budget.metadata
            ) from None
        except RecursionError:
            raise too_deep(budget.max_depth, budget.metadata) from None
        return Payload("json", value=value)
