"""`AwsAccount`: a `type: cloud` service on AWS. It holds its AWS connection (one aiobotocore
session, one client per AWS service) for the AWS capabilities to use, shows in AdminService
with that connection and the health its STS ping finds, and runs AwsService's generic calls:
any botocore operation its `allow:` list names.

A call is made in two steps, so that everything a caller can get wrong is refused before the
resilience pipeline and before any request is sent:

    request = await account.request("dynamodb", "PutItem", {"TableName": "t", ...})
        # allow-list, service and operation, parameters walked by the input shape and
        # validated by botocore: PermissionDenied / InvalidArgument / FailedPrecondition
    answer = await pipeline.execute(lambda: account.call(request, max_bytes=...))
        # one request to AWS; its answer as JSON, streamed bodies read within the bound

`pages(...)` is the same for Paginate, with one `AwsPages.next()` per page.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from sidecar.backends.cloud.aws_models import AwsModels, ServiceModels
from sidecar.backends.cloud.aws_pages import AwsPage, AwsPages, Pagination, decode_token
from sidecar.backends.cloud.aws_shapes import LARGE_BYTES, TooLarge, sized_json, to_botocore
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import CloudServiceConfig
from sidecar.connections.aws import AwsConnection
from sidecar.errors import FailedPrecondition, InvalidArgument, PermissionDenied

if TYPE_CHECKING:
    from botocore.model import OperationModel

__all__ = ["SPEC", "AwsAccount", "AwsAnswer", "AwsPage", "AwsPages", "AwsRequest", "idempotent"]

READ_PREFIXES: Final = ("Get", "Describe", "List", "Head", "Query", "Scan", "BatchGet")
"""Operations named so only read: they are retried on transient failures. Any other may
change something, and is sent once unless its caller sent an idempotency key."""

_STREAM_CHUNK = 64 * 1024


def idempotent(operation: str) -> bool:
    """Whether `operation` (API form) may be retried: its name says it only reads."""
    return operation.startswith(READ_PREFIXES)


@dataclass(frozen=True)
class AwsRequest:
    """One validated operation call, ready to send."""

    service: str
    operation: str
    parameters: Mapping[str, Any]
    """botocore values (bytes, datetimes), checked against the input shape."""
    idempotent: bool
    send: Callable[..., Awaitable[dict[str, Any]]]
    """The client's method of the operation."""
    model: OperationModel


@dataclass(frozen=True)
class AwsAnswer:
    """An operation's output as JSON, without botocore's ResponseMetadata."""

    result: dict[str, Any]
    request_id: str
    http_status: int
    size: int
    """About how many bytes `result` takes as JSON."""


class AwsAccount:
    """One AWS account in one region, on its connection.

    Args:
        name: the service's name (`target` of its errors).
        connection: the AWS connection it calls through.
        allow: `service:Operation` patterns AwsService may call (`dynamodb:*`).
    """

    def __init__(self, name: str, connection: AwsConnection, allow: Sequence[str] = ()) -> None:
        self.name = name
        self.connection = connection
        self._allow = tuple(pattern.split(":", 1) for pattern in allow)
        self._models: AwsModels | None = None

    async def ping(self) -> None:
        await self.connection.ping()

    async def close(self) -> None:
        """The connection is closed by its owner, after every service on it."""

    def allows(self, service: str, operation: str) -> bool:
        """Whether the `allow:` list names this operation (`*` matches any characters)."""
        return any(
            service == allowed_service and fnmatch.fnmatchcase(operation, allowed_operation)
            for allowed_service, allowed_operation in self._allow
        )

    async def request(
        self,
        service: str,
        operation: str,
        parameters: Mapping[str, Any] | None,
        *,
        large: bool = False,
    ) -> AwsRequest:
        """A checked call of `service:operation` with `parameters` (JSON); `large`: the
        caller saw large parameters, walked in a worker thread then.

        Raises:
            PermissionDenied: not in the `allow:` list (OPERATION_NOT_ALLOWED).
            InvalidArgument: unknown service or operation (closest names listed), or
                parameters that do not fit the input shape (`field` names the member).
            FailedPrecondition: an event-stream operation (UNSUPPORTED_OPERATION).
        """
        model, send = await self._operation(service, operation)
        checked = await self._checked(model, parameters or {}, large)
        return AwsRequest(service, operation, checked, idempotent(operation), send, model)

    async def call(self, request: AwsRequest, *, max_bytes: int) -> AwsAnswer:
        """Send `request` once; its output as JSON of at most about `max_bytes`.

        Raises:
            ResourceExhausted: the answer (or a streamed body) is larger (RESULT_TOO_LARGE).
            SidecarError: AWS's errors, mapped by the connection.
        """
        answer, request_id, status, size = await self._send(request, request.parameters, max_bytes)
        if size >= LARGE_BYTES:
            result, json_size = await asyncio.to_thread(sized_json, answer, max_bytes)
        else:
            result, json_size = sized_json(answer, max_bytes)
        return AwsAnswer(result, request_id, status, json_size)

    async def pages(
        self,
        service: str,
        operation: str,
        parameters: Mapping[str, Any] | None,
        *,
        starting_token: str,
        max_pages: int,
        max_bytes: int,
        large: bool = False,
    ) -> AwsPages:
        """The pages of a pageable operation, from `starting_token` (a `next_token`) on.

        Raises:
            PermissionDenied, InvalidArgument: as `request`; a bad starting_token too.
            FailedPrecondition: botocore has no pagination model for it
                (UNSUPPORTED_OPERATION).
        """
        model, send = await self._operation(service, operation)
        models = await self._service_models(service)
        config = models.pagination.get(operation)
        if config is None:
            raise FailedPrecondition(
                f"{service}:{operation} is not paginated (botocore has no pagination model "
                "for it): use Call",
                reason="UNSUPPORTED_OPERATION",
                metadata={"target": self.name, "aws_operation": operation},
            )
        pagination = Pagination.of(config)
        merged = dict(parameters or {})
        if starting_token:
            merged.update(decode_token(starting_token, pagination))
        checked = await self._checked(model, merged, large)
        request = AwsRequest(service, operation, checked, idempotent(operation), send, model)

        async def send_page(
            page_parameters: Mapping[str, Any],
        ) -> tuple[dict[str, Any], str, int]:
            answer, request_id, _, size = await self._send(request, page_parameters, max_bytes)
            return answer, request_id, size

        return AwsPages(send_page, pagination, checked, max_pages=max_pages, max_bytes=max_bytes)

    # -- the steps ---------------------------------------------------------------------------

    async def _operation(
        self, service: str, operation: str
    ) -> tuple[OperationModel, Callable[..., Awaitable[dict[str, Any]]]]:
        if not self.allows(service, operation):
            raise PermissionDenied(
                f"{service[:64]}:{operation[:128]} is not in the allow list of {self.name!r}",
                reason="OPERATION_NOT_ALLOWED",
                metadata={
                    "target": self.name,
                    "aws_service": service[:64],
                    "aws_operation": operation[:128],
                },
            )
        models = await self._service_models(service)
        model = models.operation(operation, self.name)
        if model.has_event_stream_input or model.has_event_stream_output:
            raise FailedPrecondition(
                f"{service}:{operation} streams events, which AwsService does not carry",
                reason="UNSUPPORTED_OPERATION",
                metadata={"target": self.name, "aws_operation": operation},
            )
        from botocore import xform_name

        client: Any = await self.connection.client(service)
        mapping: Mapping[str, str] = client.meta.method_to_api_mapping
        method: str | None = xform_name(operation)  # botocore caches it
        if method is None or mapping.get(method) != operation:  # spelt otherwise
            method = next((name for name, api in mapping.items() if api == operation), None)
        if method is None:  # botocore's model and client disagree: not the caller's fault
            raise FailedPrecondition(
                f"the botocore client of {service!r} has no method for {operation}",
                reason="UNSUPPORTED_OPERATION",
                metadata={"target": self.name, "aws_operation": operation},
            )
        return model, cast("Callable[..., Awaitable[dict[str, Any]]]", getattr(client, method))

    async def _service_models(self, service: str) -> ServiceModels:
        if self._models is None:
            self._models = AwsModels(self.connection.data_loader())
        return await self._models.get(service, self.name)

    async def _checked(
        self, model: OperationModel, parameters: Mapping[str, Any], large: bool
    ) -> dict[str, Any]:
        if large:
            return await asyncio.to_thread(self._parameters, model, parameters)
        return self._parameters(model, parameters)

    def _parameters(self, model: OperationModel, parameters: Mapping[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ParamValidationError
        from botocore.validate import validate_parameters

        shape = model.input_shape
        if shape is None:
            if parameters:
                raise InvalidArgument(
                    f"parameters: {model.name} takes none",
                    reason="INVALID_REQUEST",
                    metadata={"field": "parameters"},
                )
            return {}
        checked: dict[str, Any] = to_botocore(dict(parameters), shape, "parameters")
        try:
            validate_parameters(checked, shape)
        except ParamValidationError as exc:
            raise _invalid_parameters(str(exc)) from None
        return checked

    async def _send(
        self, request: AwsRequest, parameters: Mapping[str, Any], max_bytes: int
    ) -> tuple[dict[str, Any], str, int, int]:
        """One request: (the answer, streamed bodies read, without ResponseMetadata; the
        request id; the HTTP status; the answer's size on the wire, when known)."""
        size = 0
        with self.connection.errors:
            answer = dict(await request.send(**parameters))
            streamed = _streamed_member(request.model)
            if streamed is not None and streamed in answer:
                body = await _read_bounded(answer[streamed], max_bytes * 3 // 4)
                answer[streamed] = body
                size = len(body)
        metadata: Mapping[str, Any] = answer.pop("ResponseMetadata", None) or {}
        headers: Mapping[str, Any] = metadata.get("HTTPHeaders") or {}
        length = str(headers.get("content-length") or "")
        size += int(length) if length.isdigit() else 0
        status = int(metadata.get("HTTPStatusCode") or 0)
        return answer, str(metadata.get("RequestId") or ""), status, size


def _streamed_member(model: OperationModel) -> str | None:
    """The output member AWS streams (Lambda Invoke's Payload, S3 GetObject's Body)."""
    shape = model.output_shape
    if shape is None:
        return None
    payload = shape.serialization.get("payload")
    if payload is None:
        return None
    member = shape.members.get(payload)
    if member is not None and member.type_name == "blob":
        return str(payload)
    return None


async def _read_bounded(body: Any, limit: int) -> bytes:
    """A streamed body, read whole when at most `limit` bytes; closed either way.

    Raises:
        TooLarge: it is longer (the read stops there).
    """
    if isinstance(body, bytes):
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk: bytes = await body.read(_STREAM_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit * 4 // 3)
            chunks.append(chunk)
    finally:
        closing = getattr(body, "aclose", None) or getattr(body, "close", None)
        if closing is not None:
            result = closing()
            if inspect.isawaitable(result):
                await result


_REPORTED_MEMBER: Final = (
    re.compile(r"for parameter ([^\s,]+)"),  # Invalid type/length/range for parameter A.b
    re.compile(r"parameter in ([^\s:]+): \"([^\"]+)\""),  # Missing required parameter in A: "b"
    re.compile(r"parameter in input: \"([^\"]+)\""),  # ... in input: "A"
    re.compile(r"union structure ([^\s]+?)\.? "),  # Invalid number of parameters set for ...
)


def _reported_member(report: str) -> str | None:
    """The first member botocore's report names, as a dotted path."""
    for pattern in _REPORTED_MEMBER:
        found = pattern.search(report)
        if found:
            return ".".join(group for group in found.groups() if group)
    return None


def _invalid_parameters(report: str) -> InvalidArgument:
    """botocore's validation report as INVALID_ARGUMENT naming its first member."""
    name = _reported_member(report)
    field = f"parameters.{name}" if name else "parameters"
    text = report.replace("Parameter validation failed:\n", "").strip()
    return InvalidArgument(
        f"{field}: {text[:300]}", reason="INVALID_REQUEST", metadata={"field": field}
    )


def _build(context: BuildContext[CloudServiceConfig]) -> AwsAccount:
    connection = context.connection
    assert isinstance(connection, AwsConnection)
    return AwsAccount(context.name, connection, context.settings.allow)


SPEC = BackendSpec(
    type="cloud",
    backend="aws",
    settings=CloudServiceConfig,
    build=_build,
    connection_type="aws",
)
