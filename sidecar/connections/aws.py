"""`AwsConnection`: an AWS account in one region: its region, credentials and endpoint.

The AWS capabilities (object storage, queues, functions) open their clients on it; until one
does, it holds the settings only, talks to nothing, and so is never probed: AdminService
shows its health as unknown rather than claim a check that did not happen.
"""

from __future__ import annotations

from sidecar.config import AwsEndpoint, ConnectionPoolConfig, TimeoutsConfig

__all__ = ["AwsConnection", "open_connection"]


class AwsConnection:
    """The settings of one AWS account; no client yet."""

    type = "aws"
    probed = False
    """No health ping: nothing on it talks to AWS yet."""

    def __init__(self, name: str, endpoint: AwsEndpoint) -> None:
        self.name = name
        self.endpoint = endpoint

    async def ping(self) -> None:
        """Nothing to check until a client is opened on it."""

    async def close(self) -> None:
        """Nothing to release."""


def open_connection(
    name: str, endpoint: AwsEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> AwsConnection:
    """The AWS connection of one account's settings (no I/O)."""
    return AwsConnection(name, endpoint)
