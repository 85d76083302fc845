"""Fixtures for the transform tests: a local XML upstream, a descriptor set compiled by
protoc in the test, and the process's resident memory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from transform.xml_upstream import XmlUpstream

SHOP_PROTO = """
syntax = "proto3";
package shop.v1;

import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Status {
  STATUS_UNSPECIFIED = 0;
  STATUS_OPEN = 1;
  STATUS_SHIPPED = 2;
}

message Line {
  string sku = 1;
  int32 quantity = 2;
}

message Scalars {
  double f_double = 1;
  float f_float = 2;
  int32 f_int32 = 3;
  int64 f_int64 = 4;
  uint32 f_uint32 = 5;
  uint64 f_uint64 = 6;
  sint32 f_sint32 = 7;
  sint64 f_sint64 = 8;
  fixed32 f_fixed32 = 9;
  fixed64 f_fixed64 = 10;
  sfixed32 f_sfixed32 = 11;
  sfixed64 f_sfixed64 = 12;
  bool f_bool = 13;
  string f_string = 14;
  bytes f_bytes = 15;
}

message Order {
  string id = 1;
  Scalars scalars = 2;
  repeated Line lines = 3;
  map<string, int64> totals = 4;
  map<int32, Line> by_position = 5;
  oneof payment {
    string card_token = 6;
    Line voucher = 7;
  }
  Status status = 8;
  repeated Status history = 9;
  google.protobuf.Timestamp created = 10;
  google.protobuf.Duration ttl = 11;
  google.protobuf.Struct extra = 12;
  google.protobuf.Int64Value limit = 13;
  google.protobuf.StringValue note = 14;
  google.protobuf.Any attachment = 15;
  optional int32 priority = 16;
  google.protobuf.Value anything = 17;
  google.protobuf.ListValue tags = 18;
  google.protobuf.BoolValue gift = 19;
}

message Tree {
  string name = 1;
  repeated Tree children = 2;
}
"""


def compile_descriptor_set(folder: Path, *, include_imports: bool = True) -> Path:
    """shop.proto compiled by protoc (grpc_tools) into a FileDescriptorSet file."""
    (folder / "shop.proto").write_text(SHOP_PROTO)
    out = folder / ("shop.binpb" if include_imports else "shop-alone.binpb")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{folder}",
        f"-I{Path(__import__('grpc_tools').__file__).parent / '_proto'}",
        f"--descriptor_set_out={out}",
        *(["--include_imports"] if include_imports else []),
        "shop.proto",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_descriptor_set(tmp_path_factory.mktemp("protos"))


@pytest.fixture
def xml_upstream() -> Iterator[XmlUpstream]:
    server = XmlUpstream().start()
    try:
        yield server
    finally:
        server.stop()


def rss_bytes() -> int:
    """The process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")
