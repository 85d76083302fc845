"""AwsService: validates requests, picks the `type: cloud` service by target, and runs its
`AwsAccount` through the target's resilience pipeline. No AWS, retry or breaker knowledge
lives here.

- Everything the caller can get wrong (the allow list, the service and operation names, the
  parameters against the operation's input shape) is refused by `AwsAccount.request` /
  `pages` before the pipeline: no request is sent, no breaker counts it.
- Only operations named as reads (Get, Describe, List, Head, Query, Scan, BatchGet) are
  retried; any other only with an idempotency-key header (`call_through`).
- Paginate sends each page through the pipeline on its own: a transient failure retries
  that page, never the pages already streamed. An idle reader holds nothing upstream (the
  next page is asked for only once the previous one is written), so no idle timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from google.protobuf import struct_pb2

from generated.integration.v1 import aws_pb2, aws_pb2_grpc
from sidecar.backends.cloud.aws import AwsAccount, idempotent
from sidecar.backends.cloud.aws_shapes import LARGE_BYTES
from sidecar.runtime import Integration, Integrations
from sidecar.servicers._aws_values import parameters_from_struct, struct_from_json
from sidecar.servicers._common import Context, call_deadline, call_through, invalid, resolve

__all__ = ["AwsServicer"]

_MAX_SERVICE = 64
_MAX_OPERATION = 128
_DEFAULT_PAGES: Final = 100
_MAX_PAGES: Final = 10_000
# Every answer leaves room for its envelope under the server's message limit.
_ENVELOPE_BYTES = 16 * 1024


class AwsServicer(aws_pb2_grpc.AwsServiceServicer):
    """Serve AwsService over the configured `type: cloud` services."""

    def __init__(self, integrations: Integrations, *, max_message_bytes: int) -> None:
        """`max_message_bytes` is the server's largest response message; no answer and no
        page is built larger (RESOURCE_EXHAUSTED, RESULT_TOO_LARGE instead)."""
        self._integrations = integrations
        self._max_result_bytes = max_message_bytes - min(_ENVELOPE_BYTES, max_message_bytes // 4)

    def _target(self, target: str) -> tuple[Integration[Any], AwsAccount]:
        integration = resolve(self._integrations, "cloud", target)
        account = integration.backend
        assert isinstance(account, AwsAccount)
        return integration, account

    async def Call(self, request: aws_pb2.CallRequest, context: Context) -> aws_pb2.CallResponse:
        integration, account = self._target(request.target)
        service, operation = _service(request.service), _operation(request.operation)
        large = request.parameters.ByteSize() >= LARGE_BYTES
        parameters = await _parameters(request, large)
        call = await account.request(service, operation, parameters, large=large)
        max_bytes = self._max_result_bytes
        deadline = call_deadline(context, self._integrations.clock)
        answer = await call_through(
            integration,
            context,
            lambda: account.call(call, max_bytes=max_bytes),
            idempotent=call.idempotent,
            deadline=deadline,
        )
        return aws_pb2.CallResponse(
            result=await _struct(answer.result, answer.size, max_bytes),
            request_id=answer.request_id,
            http_status=answer.http_status,
        )

    async def Paginate(  # type: ignore[override]  # write-style streaming handler
        self, request: aws_pb2.PaginateRequest, context: Context
    ) -> None:
        integration, account = self._target(request.target)
        if not 0 <= request.max_pages <= _MAX_PAGES:
            raise invalid("max_pages", f"must be between 0 and {_MAX_PAGES}")
        service, operation = _service(request.service), _operation(request.operation)
        large = request.parameters.ByteSize() >= LARGE_BYTES
        parameters = await _parameters(request, large)
        max_bytes = self._max_result_bytes
        pages = await account.pages(
            service,
            operation,
            parameters,
            starting_token=request.starting_token,
            max_pages=request.max_pages or _DEFAULT_PAGES,
            max_bytes=max_bytes,
            large=large,
        )
        retried = idempotent(operation)
        deadline = call_deadline(context, self._integrations.clock)
        while True:
            page = await call_through(
                integration, context, pages.next, idempotent=retried, deadline=deadline
            )
            if page is None:
                return
            await context.write(
                aws_pb2.PaginateResponse(
                    page=await _struct(page.page, page.size, max_bytes),
                    page_number=page.number,
                    next_token=page.next_token,
                    request_id=page.request_id,
                )
            )


async def _parameters(
    request: aws_pb2.CallRequest | aws_pb2.PaginateRequest, large: bool
) -> dict[str, Any]:
    """The request's parameters as JSON; large ones converted in a worker thread."""
    if large:
        return await asyncio.to_thread(parameters_from_struct, request.parameters, "parameters")
    return parameters_from_struct(request.parameters, "parameters")


async def _struct(value: dict[str, Any], size: int, max_bytes: int) -> struct_pb2.Struct:
    """An answer as a Struct; a large one built in a worker thread."""
    if size >= LARGE_BYTES:
        return await asyncio.to_thread(struct_from_json, value, max_bytes)
    return struct_from_json(value, max_bytes)


def _service(value: str) -> str:
    if not value:
        raise invalid("service", "must name an AWS service, such as dynamodb")
    if len(value) > _MAX_SERVICE:
        raise invalid("service", f"must be at most {_MAX_SERVICE} characters")
    return value


def _operation(value: str) -> str:
    if not value:
        raise invalid("operation", "must name an operation, such as GetItem")
    if len(value) > _MAX_OPERATION:
        raise invalid("operation", f"must be at most {_MAX_OPERATION} characters")
    return value
