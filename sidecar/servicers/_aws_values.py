"""AwsService's JSON: a request's Struct as plain JSON within AwsService's bounds (nesting,
value count), and an answer's JSON as a Struct no larger than a response may be."""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import struct_pb2

from sidecar.errors import ResourceExhausted
from sidecar.servicers._common import invalid

__all__ = ["MAX_DEPTH", "MAX_VALUES", "parameters_from_struct", "struct_from_json"]

MAX_DEPTH: Final = 32
"""Levels of objects and arrays in one request's parameters (DynamoDB nests 32 deep)."""
MAX_VALUES: Final = 100_000
"""Values (members, items, scalars) in one request's parameters, all levels together."""


def parameters_from_struct(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """`struct` as JSON (numbers stay floats: the shapes decide what is an integer).

    Raises:
        InvalidArgument: deeper than MAX_DEPTH or more than MAX_VALUES values.
    """
    count = [0]

    def value(item: struct_pb2.Value, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_VALUES:
            raise invalid(field, f"holds more than {MAX_VALUES} values")
        kind = item.WhichOneof("kind")
        if kind == "struct_value":
            return mapping(item.struct_value, depth + 1)
        if kind == "list_value":
            if depth + 1 > MAX_DEPTH:
                raise invalid(field, f"nests deeper than {MAX_DEPTH} levels")
            return [value(inner, depth + 1) for inner in item.list_value.values]
        if kind == "string_value":
            return item.string_value
        if kind == "number_value":
            return item.number_value
        if kind == "bool_value":
            return item.bool_value
        return None  # null_value, or no kind at all

    def mapping(message: struct_pb2.Struct, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise invalid(field, f"nests deeper than {MAX_DEPTH} levels")
        return {key: value(inner, depth) for key, inner in message.fields.items()}

    return mapping(struct, 1)


def struct_from_json(value: dict[str, Any], max_bytes: int) -> struct_pb2.Struct:
    """`value` (JSON) as a Struct of at most `max_bytes` serialized.

    Raises:
        ResourceExhausted: it is larger (RESULT_TOO_LARGE).
    """
    struct = struct_pb2.Struct()
    struct.update(value)
    if struct.ByteSize() > max_bytes:
        raise ResourceExhausted(
            f"the answer is larger than {max_bytes} bytes, the most a response message may "
            "carry; ask for less (a page size, a projection) or use Paginate",
            reason="RESULT_TOO_LARGE",
            metadata={"max_bytes": str(max_bytes)},
        )
    return struct
