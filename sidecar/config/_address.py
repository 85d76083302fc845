"""Listen addresses: `host:port` or `unix:/path`, checked at load time.

gRPC only complains about a bad address when the server binds, long after the config was
"accepted"; checking the shape here turns a late, vague start-up failure into a config error
with a path.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = ["HostPort", "ListenAddress", "check_host_port", "check_listen_address"]

# A hostname / IPv4 address, or a bracketed IPv6 address, then a port.
_HOST_PORT = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})"
)
_MAX_PORT = 65535


def check_host_port(value: str) -> str:
    """Accept `host:port` (port 0..65535; 0 asks the OS for a free port, handy in tests).

    Raises:
        PydanticCustomError: `invalid_address` when the value is not `host:port`.
    """
    match = _HOST_PORT.fullmatch(value)
    if match is None or int(match.group(1)) > _MAX_PORT:
        raise PydanticCustomError(
            "invalid_address",
            "invalid address {value}: use host:port, e.g. 127.0.0.1:9464 or [::1]:9464",
            {"value": repr(value)},
        )
    return value


def check_listen_address(value: str) -> str:
    """Accept `host:port` or `unix:/absolute/path` (what grpc's `add_insecure_port` takes).

    Raises:
        PydanticCustomError: `invalid_address` for anything else.
    """
    if value.startswith("unix:"):
        if len(value) > len("unix:/") and value[len("unix:")] == "/":
            return value
    else:
        match = _HOST_PORT.fullmatch(value)
        if match is not None and int(match.group(1)) <= _MAX_PORT:
            return value
    raise PydanticCustomError(
        "invalid_address",
        "invalid listen address {value}: use host:port (e.g. 127.0.0.1:50051) "
        "or unix:/path (e.g. unix:/run/sidecar.sock)",
        {"value": repr(value)},
    )


HostPort = Annotated[str, AfterValidator(check_host_port)]
"""A TCP address to listen on, `host:port`."""

ListenAddress = Annotated[str, AfterValidator(check_listen_address)]
"""Where the gRPC server listens: `host:port` or `unix:/path`."""
