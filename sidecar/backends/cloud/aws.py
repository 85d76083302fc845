"""`AwsAccount`: a `type: cloud` service on AWS. It serves no RPC of its own yet: it holds
its AWS connection (one aiobotocore session, one client per AWS service) for the AWS
capabilities to use, and shows in AdminService with that connection and the health its STS
ping finds."""

from __future__ import annotations

from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import CloudServiceConfig
from sidecar.connections.aws import AwsConnection

__all__ = ["SPEC", "AwsAccount"]


class AwsAccount:
    """One AWS account in one region, on its connection."""

    def __init__(self, connection: AwsConnection) -> None:
        self.connection = connection

    async def ping(self) -> None:
        await self.connection.ping()

    async def close(self) -> None:
        """The connection is closed by its owner, after every service on it."""


def _build(context: BuildContext[CloudServiceConfig]) -> AwsAccount:
    connection = context.connection
    assert isinstance(connection, AwsConnection)
    return AwsAccount(connection)


SPEC = BackendSpec(
    type="cloud",
    backend="aws",
    settings=CloudServiceConfig,
    build=_build,
    connection_type="aws",
)
