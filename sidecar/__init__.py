"""Integration sidecar: a per-pod gRPC server that talks to the outside world for an app."""

__all__ = ["__version__"]

__version__ = "0.1.0"
