"""Backends: one folder per capability, one module per backend.

A capability's `base.py` holds its domain types and its `typing.Protocol`; each backend module
(`memory.py` now, `redis.py` later) implements that protocol. Backends know nothing of gRPC or
protobuf: they take and return the frozen dataclasses of `base.py` and raise the domain errors
of `sidecar.errors`.
"""

__all__: list[str] = []
