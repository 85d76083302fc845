"""The aws connection against moto in server mode: one client per AWS service, botocore's
retries off, timeouts and pool from the connection, every credential source (static, the
default chain's environment, profile and web identity, an assumed role), S3 addressing, the
health ping, and AWS's errors mapped on the real paths."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer

from sidecar.config import parse_config
from sidecar.connections.aws import AwsConnection, open_connection
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

STATIC = f"credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}"
ROLE = "arn:aws:iam::123456789012:role/sidecar-reader"

Opener = Callable[[str], AwsConnection]


@pytest.fixture
async def connect(moto_server: MotoServer) -> AsyncIterator[Opener]:
    """`connect(extra)`: an aws connection to moto, its section `{type: aws, ..., extra}`."""
    made: list[AwsConnection] = []

    def connect(extra: str = STATIC) -> AwsConnection:
        section = f"{{type: aws, region: us-east-1, endpoint_url: {moto_server.url}, {extra}}}"
        config = parse_config(f"connections:\n  up: {section}\n")
        pool, timeouts = config.connection_policies("up")
        connection = open_connection("up", config.connections["up"], pool, timeouts)  # type: ignore[arg-type]
        made.append(connection)
        return connection

    yield connect
    for connection in made:
        await connection.close()


def new_calls(server: MotoServer, before: int) -> list[str]:
    return server.log()[before:]


# -- retries off -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [(503, "ServiceUnavailable", Unavailable), (400, "Throttling", ResourceExhausted)],
)
async def test_botocore_sends_a_failing_call_once(
    connect: Opener, moto_server: MotoServer, status: int, code: str, raised: type[Exception]
) -> None:
    """botocore would retry both (standard mode: 3 attempts); the connection turns that off
    so the resilience pipeline is the only retry loop."""
    connection = connect()
    await connection.ping()  # the client exists: only the failing call is counted below
    moto_server.fail_next("sts:GetCallerIdentity", status=status, code=code, count=5)
    before = len(moto_server.log())
    try:
        with pytest.raises(raised):
            await connection.ping()
    finally:
        moto_server.clear_faults()
    assert new_calls(moto_server, before) == ["sts:GetCallerIdentity"]


async def test_clients_carry_the_connection_timeouts_pool_and_addressing(
    connect: Opener,
) -> None:
    connection = connect(
        f"{STATIC}, timeouts: {{connect: 2s, read: 3s}}, connection_pool: {{max_connections: 7}}"
        ", addressing_style: virtual"
    )
    for service in ("sts", "s3"):
        config = (await connection.client(service)).meta.config
        assert (config.connect_timeout, config.read_timeout) == (2.0, 3.0)
        assert config.max_pool_connections == 7
        assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
        assert config.s3 == {"addressing_style": "virtual"}


# -- one client per service ------------------------------------------------------------------


async def test_concurrent_first_calls_share_one_client_per_service(connect: Opener) -> None:
    connection = connect()
    names = ["s3", "sqs", "sts"] * 30
    clients = await asyncio.gather(*(connection.client(name) for name in names))
    by_service: dict[str, set[int]] = {}
    for name, client in zip(names, clients, strict=True):
        by_service.setdefault(name, set()).add(id(client))
    assert {name: len(ids) for name, ids in by_service.items()} == {"s3": 1, "sqs": 1, "sts": 1}
    assert connection.client_count == 3
    assert await connection.client("s3") is clients[0]


async def test_close_closes_every_client_and_later_calls_are_unavailable(
    connect: Opener,
) -> None:
    connection = connect()
    await connection.ping()
    clients = [await connection.client(name) for name in ("s3", "sqs")]
    sessions = [client._endpoint.http_session for client in clients]  # aiobotocore's own
    assert all(session._sessions is not None for session in sessions)
    await connection.close()
    await connection.close()
    assert all(session._sessions is None for session in sessions)  # pools closed
    assert connection.client_count == 0
    with pytest.raises(Unavailable) as raised:
        await connection.client("s3")
    assert (raised.value.reason, raised.value.metadata) == ("BACKEND_CLOSED", {"target": "up"})


async def test_an_unknown_service_is_invalid_argument(connect: Opener) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await connect().client("no-such-service")
    assert raised.value.metadata["aws_service"] == "no-such-service"


# -- credentials -----------------------------------------------------------------------------


async def test_static_credentials_sign_every_request(
    connect: Opener, moto_server: MotoServer
) -> None:
    before = len(moto_server.log())
    await connect().ping()
    assert moto_server.signed_with()[before:] == [FAKE_KEY]


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The default chain sees nothing of this machine: no files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


async def test_without_credentials_the_default_chain_reads_the_environment(
    connect: Opener,
    moto_server: MotoServer,
    no_ambient_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    before = len(moto_server.log())
    await connect("addressing_style: auto").ping()
    assert moto_server.signed_with()[before:] == ["AKIAFROMENVIRONMENT1"]


async def test_the_default_chain_reads_a_profile(
    connect: Opener,
    moto_server: MotoServer,
    no_ambient_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (no_ambient_credentials / "credentials").write_text(
        "[sidecar-test]\naws_access_key_id = AKIAFROMAPROFILE0001\n"
        "aws_secret_access_key = from-a-profile\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "sidecar-test")
    before = len(moto_server.log())
    await connect("addressing_style: auto").ping()
    assert moto_server.signed_with()[before:] == ["AKIAFROMAPROFILE0001"]


async def test_the_default_chain_takes_a_web_identity_as_on_eks(
    connect: Opener,
    moto_server: MotoServer,
    no_ambient_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IRSA: the pod's projected token and role, exchanged with AssumeRoleWithWebIdentity
    (sent to moto through AWS_ENDPOINT_URL_STS, as botocore's own client for it ignores the
    connection's endpoint_url)."""
    token = no_ambient_credentials / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.signature")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "pod-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.url)
    connection = connect("addressing_style: auto")
    before = len(moto_server.log())
    await connection.ping()
    sts: Any = await connection.client("sts")
    identity = await sts.get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/irsa/pod-1"
    calls = new_calls(moto_server, before)
    assert calls.count("?:AssumeRoleWithWebIdentity") == 1  # unsigned: it carries the token
    assert calls.count("sts:GetCallerIdentity") == 2


async def test_assume_role_signs_with_the_role_and_refreshes_before_expiry(
    connect: Opener, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_TEST_EXTERNAL_ID", "ext-123")
    connection = connect(
        f"{STATIC}, assume_role: {{role_arn: '{ROLE}', session_name: conformance, "
        "external_id: '${SIDECAR_TEST_EXTERNAL_ID}', duration: 15m}"
    )
    before = len(moto_server.log())
    await connection.ping()
    sts: Any = await connection.client("sts")
    identity = await sts.get_caller_identity()
    s3: Any = await connection.client("s3")
    await s3.list_buckets()
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/sidecar-reader/conformance"
    calls, keys = new_calls(moto_server, before), moto_server.signed_with()[before:]
    assert calls[0] == "sts:AssumeRole" and calls.count("sts:AssumeRole") == 1
    assert keys[0] == FAKE_KEY  # the source credentials sign AssumeRole only
    assert all(key.startswith("ASIA") for key in keys[1:])  # the role's temporary ones

    # Near expiry (inside the refresh window), the next call assumes the role again.
    credentials = await connection._main_session().get_credentials()
    assert credentials is not None
    credentials._expiry_time = datetime.datetime.now(datetime.UTC) + datetime.timedelta(  # type: ignore[attr-defined]
        seconds=30
    )
    before = len(moto_server.log())
    await connection.ping()
    assert new_calls(moto_server, before) == ["sts:AssumeRole", "sts:GetCallerIdentity"]


async def test_a_refused_assume_role_fails_the_ping(
    connect: Opener, moto_server: MotoServer
) -> None:
    connection = connect(f"{STATIC}, assume_role: {{role_arn: '{ROLE}'}}")
    moto_server.fail_next("sts:AssumeRole", status=403, code="AccessDenied")
    try:
        with pytest.raises(PermissionDenied) as raised:
            await connection.ping()
    finally:
        moto_server.clear_faults()
    assert raised.value.metadata["aws_operation"] == "AssumeRole"
    await connection.ping()  # the next attempt assumes the role


# -- the health ping -------------------------------------------------------------------------


async def test_ping_on_a_custom_endpoint_takes_any_answer_below_500(
    connect: Opener, moto_server: MotoServer
) -> None:
    """An S3-compatible store may not speak STS: its 4xx answer still shows it is up;
    5xx and throttling do not."""
    connection = connect()
    try:
        moto_server.fail_next("sts:GetCallerIdentity", status=403, code="AccessDenied")
        await connection.ping()
        moto_server.fail_next("sts:GetCallerIdentity", status=405, code="MethodNotAllowed")
        await connection.ping()
        moto_server.fail_next("sts:GetCallerIdentity", status=500, code="InternalError")
        with pytest.raises(Unavailable):
            await connection.ping()
        moto_server.fail_next("sts:GetCallerIdentity", status=400, code="Throttling")
        with pytest.raises(ResourceExhausted):
            await connection.ping()
    finally:
        moto_server.clear_faults()


# -- S3 addressing and the error mapping on real answers --------------------------------------


async def test_path_addressing_and_s3_errors_on_real_answers(
    connect: Opener, moto_server: MotoServer
) -> None:
    connection = connect(f"{STATIC}, addressing_style: path")
    s3: Any = await connection.client("s3")
    before = len(moto_server.log())
    await s3.create_bucket(Bucket="aws-conn-errors")
    put = await s3.put_object(Bucket="aws-conn-errors", Key="k", Body=b"v")
    assert new_calls(moto_server, before) == [
        "s3:PUT /aws-conn-errors",
        "s3:PUT /aws-conn-errors/k",
    ]

    async def mapped(call: Any) -> Exception:
        try:
            with connection.errors:
                await call
        except Exception as exc:
            return exc
        raise AssertionError("no error")

    missing_key = await mapped(s3.get_object(Bucket="aws-conn-errors", Key="nope"))
    assert isinstance(missing_key, NotFound)
    assert missing_key.reason == "UPSTREAM_NOT_FOUND"
    assert missing_key.metadata["aws_error_code"] == "NoSuchKey"
    missing_bucket = await mapped(s3.get_object(Bucket="aws-conn-missing", Key="k"))
    assert isinstance(missing_bucket, NotFound)
    assert missing_bucket.metadata["aws_error_code"] == "NoSuchBucket"
    head = await mapped(s3.head_object(Bucket="aws-conn-errors", Key="nope"))
    assert isinstance(head, NotFound) and head.metadata["http_status"] == "404"
    stale = await mapped(s3.get_object(Bucket="aws-conn-errors", Key="k", IfMatch='"stale"'))
    assert isinstance(stale, FailedPrecondition)
    assert stale.reason == "UPSTREAM_CONDITION_FAILED"
    assert stale.metadata["aws_error_code"] == "PreconditionFailed"
    bad = await mapped(s3.get_object(Bucket="aws-conn-errors"))  # Key missing: client side
    assert isinstance(bad, InvalidArgument) and bad.reason == "INVALID_REQUEST"
    fresh = await s3.get_object(Bucket="aws-conn-errors", Key="k", IfMatch=put["ETag"])
    assert await fresh["Body"].read() == b"v"


async def test_a_throttle_keeps_its_retry_after_and_code(
    connect: Opener, moto_server: MotoServer
) -> None:
    connection = connect()
    moto_server.fail_next("sts:GetCallerIdentity", status=400, code="Throttling", retry_after="3")
    try:
        with pytest.raises(ResourceExhausted) as raised:
            await connection.ping()
    finally:
        moto_server.clear_faults()
    assert raised.value.reason == "UPSTREAM_RATE_LIMITED"
    assert raised.value.retry_after == 3.0
    assert raised.value.metadata["aws_error_code"] == "Throttling"
    assert raised.value.metadata["target"] == "up"
