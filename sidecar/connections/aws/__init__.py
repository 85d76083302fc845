"""AWS connections: one aiobotocore session per connection and one client per AWS service on
it (retries off, the connection's timeouts and pool size, TLS), its health ping, and the
mapping of botocore's exceptions to `sidecar.errors`.

aiobotocore is imported when a client is first made, so a config without AWS never loads it.
"""

from sidecar.config import AwsEndpoint, ConnectionPoolConfig, TimeoutsConfig
from sidecar.connections.aws.client_config import ClientOptions, client_options
from sidecar.connections.aws.connection import AwsConnection
from sidecar.connections.aws.errors import AwsErrors, aws_errors, map_aws_error

__all__ = [
    "AwsConnection",
    "AwsErrors",
    "ClientOptions",
    "aws_errors",
    "client_options",
    "map_aws_error",
    "open_connection",
]


def open_connection(
    name: str, endpoint: AwsEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> AwsConnection:
    """The AWS connection of one account's settings (no I/O: clients open on first use)."""
    options = client_options(
        endpoint,
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        max_pool_connections=pool.max_connections,
    )
    return AwsConnection(name, endpoint, options)
