"""`AwsConnection`: an AWS account in one region, and the aiobotocore clients that talk to it.

One aiobotocore session per connection, and one client per AWS service name on it, created
on first use and shared by every caller (the object store, the queue and the generic AWS
backends on the connection): a client holds its own aiohttp connection pool, so two clients
of one service would be two pools. The connection closes them all, after every service that
used them is closed.

Usage:

    connection = AwsConnection("aws", settings, options)
    s3 = await connection.client("s3")         # the same client for every caller
    with connection.errors:                    # botocore exceptions -> sidecar.errors
        await s3.head_bucket(Bucket="b")
    await connection.ping()                    # STS GetCallerIdentity
    await connection.close()

Credentials: the static ones of the settings, else botocore's default chain (environment,
shared config and profile, web identity / IRSA, container and instance metadata). With
`assume_role`, those are the source credentials of an STS AssumeRole whose temporary
credentials the session refreshes before they expire (a second, private session holds the
source credentials and its STS client).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, cast

from sidecar.config import AwsEndpoint
from sidecar.connections.aws.client_config import ClientOptions
from sidecar.connections.aws.errors import aws_errors
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient
    from aiobotocore.session import AioSession
    from types_aiobotocore_sts import STSClient

__all__ = ["AwsConnection"]

_DEFAULT_ADVISORY_REFRESH = 15 * 60.0
_DEFAULT_MANDATORY_REFRESH = 10 * 60.0


class AwsConnection:
    """The shared session and clients of one AWS account.

    Args:
        name: the connection's name (`target` in the ErrorInfo of its errors).
        settings: region, credentials, assume_role, endpoint_url, addressing_style, tls.
        options: what every client is created with (see `client_options`).
    """

    type = "aws"
    probed = True

    def __init__(self, name: str, settings: AwsEndpoint, options: ClientOptions) -> None:
        self.name = name
        self.settings = settings
        self.options = options
        self.errors = aws_errors(name)
        """The exception mapping of this connection (`target` is its name)."""
        self._session: AioSession | None = None
        self._source_session: AioSession | None = None
        self._clients: dict[str, AioBaseClient] = {}
        self._source_sts: STSClient | None = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._source_lock = asyncio.Lock()
        self._closed = False
        self._ping_timeout = options.connect_timeout + options.read_timeout

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def client_count(self) -> int:
        """How many clients are open (one per AWS service used so far)."""
        return len(self._clients)

    async def client(self, service_name: str) -> AioBaseClient:
        """The connection's client of `service_name` (`s3`, `sqs`, `dynamodb`, ...), created
        on the first call and the same object for every later one.

        Raises:
            Unavailable: the connection is closed (BACKEND_CLOSED).
            InvalidArgument: botocore knows no such service.
        """
        client = self._clients.get(service_name)
        if client is not None:
            return client
        async with self._lock:  # one creation at a time: two callers never make two clients
            self._check_open()
            client = self._clients.get(service_name)
            if client is None:
                client = await self._create(self._main_session(), service_name)
                self._clients[service_name] = client
            return client

    def data_loader(self) -> Any:
        """botocore's loader of service models (JSON API descriptions) for this connection's
        session: the cache its clients use, so a model is read from disk once. Its loads
        are blocking file I/O and parsing: call them off the event loop."""
        self._check_open()
        return self._main_session().get_component("data_loader")

    async def ping(self) -> None:
        """STS GetCallerIdentity, bounded by the connection's connect + read timeouts.

        With `endpoint_url` (an S3-compatible store may not speak STS at all), any answer to
        it below 500 other than throttling shows the endpoint is up; against AWS itself the
        call must succeed, so broken credentials show as unhealthy too. With `assume_role`
        the first ping assumes the role, and a refused AssumeRole fails the ping.

        Raises:
            Unavailable, DeadlineExceeded, PermissionDenied, ...: mapped from botocore.
        """
        sts = cast("STSClient", await self.client("sts"))
        try:
            async with asyncio.timeout(self._ping_timeout):
                with self.errors:
                    await sts.get_caller_identity()
        except TimeoutError:
            raise DeadlineExceeded(
                f"AWS did not answer the health ping within {self._ping_timeout:g}s",
                reason="DEADLINE_EXCEEDED",
                metadata={"target": self.name},
            ) from None
        except (NotFound, InvalidArgument, PermissionDenied, FailedPrecondition) as exc:
            answered = exc.metadata.get("aws_operation") == "GetCallerIdentity"
            if not (self.settings.endpoint_url and answered):
                raise  # AWS refused the credentials, or AssumeRole failed: not healthy

    async def close(self) -> None:
        """Close every client of the connection. Idempotent; later calls get Unavailable."""
        if self._closed:
            return
        self._closed = True
        async with self._lock, self._source_lock:
            self._clients.clear()
            self._source_sts = None
            await self._stack.aclose()

    # -- sessions and credentials ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                f"the AWS connection {self.name!r} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )

    def _main_session(self) -> AioSession:
        if self._session is None:
            self._session = self._new_session()
            role = self.settings.assume_role
            if role is not None:
                credentials = _role_credentials(self._assume_role, role.duration)
                # botocore keeps a session's credentials here; set_credentials only takes
                # static ones.
                cast(Any, self._session)._credentials = credentials
        return self._session

    def _new_session(self) -> AioSession:
        from aiobotocore.session import AioSession

        session = AioSession()
        static = self.settings.credentials
        if static is not None:
            token = static.session_token.get_secret_value() if static.session_token else None
            session.set_credentials(
                static.access_key_id.get_secret_value(),
                static.secret_access_key.get_secret_value(),
                token or None,
            )
        return session

    async def _create(self, session: AioSession, service_name: str) -> AioBaseClient:
        from botocore.exceptions import UnknownServiceError

        options = self.options
        config = options.config
        if service_name == "s3":  # presigned URLs signed with SigV4, not botocore's SigV2
            from aiobotocore.config import AioConfig

            config = config.merge(AioConfig(signature_version="s3v4"))
        context = cast(Any, session).create_client(
            service_name,
            region_name=options.region,
            endpoint_url=options.endpoint_url,
            verify=options.verify,
            config=config,
        )
        with self.errors:
            try:
                client: AioBaseClient = await self._stack.enter_async_context(context)
            except UnknownServiceError as exc:
                raise InvalidArgument(
                    f"botocore knows no AWS service {service_name!r}",
                    reason="INVALID_REQUEST",
                    metadata={"target": self.name, "aws_service": service_name},
                ) from exc
        return client

    async def _assume_role(self) -> dict[str, Any]:
        """STS AssumeRole with the source credentials: the refresh of the role's."""
        role = self.settings.assume_role
        assert role is not None
        async with self._source_lock:
            self._check_open()
            if self._source_sts is None:
                if self._source_session is None:
                    self._source_session = self._new_session()
                created = await self._create(self._source_session, "sts")
                self._source_sts = cast("STSClient", created)
            sts = self._source_sts
        arguments: dict[str, Any] = {
            "RoleArn": role.role_arn,
            "RoleSessionName": role.session_name,
            "DurationSeconds": int(role.duration),
        }
        if role.external_id is not None:
            arguments["ExternalId"] = role.external_id.get_secret_value()
        answer = await sts.assume_role(**arguments)
        credentials = answer["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }


def _role_credentials(refresh: Any, duration: float) -> Any:
    """Refreshable credentials fetched by `refresh` on first use, refreshed before expiry.

    botocore refreshes 15 minutes (advisory) and 10 minutes (mandatory) before expiry; for a
    short role session (15 minutes is allowed) that would mean an AssumeRole per call, so the
    windows shrink to a third and a sixth of the duration."""
    from aiobotocore.credentials import AioDeferredRefreshableCredentials

    credentials = AioDeferredRefreshableCredentials(refresh_using=refresh, method="assume-role")
    windows = cast(Any, credentials)
    windows._advisory_refresh_timeout = min(_DEFAULT_ADVISORY_REFRESH, duration / 3)
    windows._mandatory_refresh_timeout = min(_DEFAULT_MANDATORY_REFRESH, duration / 6)
    return credentials
