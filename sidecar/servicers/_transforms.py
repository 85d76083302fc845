"""Transforms applied where HttpService moves data: a request body before it is sent, a 2xx
answer before it is returned."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from sidecar.backends.api.http import ApiAnswer
from sidecar.errors import FailedPrecondition, InvalidArgument, SidecarError
from sidecar.transform import Transforms

__all__ = ["transformed_answer", "transformed_body"]

_CONTENT_TYPE: Final = "content-type"

Headers = Sequence[tuple[str, str]]


def _content_type(headers: Headers) -> str:
    return next((value for name, value in headers if name.lower() == _CONTENT_TYPE), "")


def _with_content_type(headers: Headers, content_type: str) -> list[tuple[str, str]]:
    kept = [(name, value) for name, value in headers if name.lower() != _CONTENT_TYPE]
    return [*kept, ("Content-Type", content_type)]


async def transformed_body(
    transforms: Transforms, transform: str, body: bytes, is_json: bool, headers: Headers
) -> tuple[bytes, list[tuple[str, str]]]:
    """A request body through `transform`, and the headers with the output's Content-Type.
    A failure is the caller's: INVALID_ARGUMENT, and nothing is sent."""
    content_type = "application/json" if is_json else _content_type(headers)
    output = await transforms.transform(transform, body, content_type, field="request.body")
    return output.data, _with_content_type(headers, output.content_type)


async def transformed_answer(
    transforms: Transforms, transform: str, answer: ApiAnswer, target: str
) -> ApiAnswer:
    """A 2xx answer through `transform` (other answers as they came). An answer that does
    not convert is the upstream's fault, not the caller's: FAILED_PRECONDITION with the
    transform's reason."""
    if not 200 <= answer.status < 300:
        return answer
    try:
        # Upstreams often label XML text/plain: the transform's parser is the judge.
        output = await transforms.transform(transform, answer.body, field="response.body")
    except InvalidArgument as exc:
        raise _upstream_fault(exc, target, answer.status) from None
    return dataclasses.replace(
        answer,
        body=output.data,
        headers=tuple(_with_content_type(answer.headers, output.content_type)),
    )


def _upstream_fault(exc: SidecarError, target: str, status: int) -> FailedPrecondition:
    metadata = {key: value for key, value in exc.metadata.items() if key != "field"}
    return FailedPrecondition(
        f"the upstream's answer: {exc.message}",
        reason=exc.reason,
        metadata={**metadata, "target": target, "upstream_status": str(status)},
    )
