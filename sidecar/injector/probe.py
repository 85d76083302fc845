"""`python -m sidecar.injector.probe ADDRESS`: the exec probe of a sidecar on a Unix socket.

kubelet's own gRPC probe dials TCP only, so a sidecar listening on a Unix socket is probed by
this instead: one standard health check of the whole process (service ""), exit 0 if SERVING.
"""

from __future__ import annotations

import sys

__all__ = ["check", "main"]


def check(address: str, timeout: float = 2.0) -> bool:
    """Whether the sidecar at `address` answers its health check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"health check failed: {exc.code().name}", file=sys.stderr)
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    """Probe the address given as the only argument; exit code 0 means healthy."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sidecar.injector.probe ADDRESS", file=sys.stderr)
        return 2
    return 0 if check(args[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
