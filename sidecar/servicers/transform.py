"""TransformService: runs the configured transforms and schemas by name (`sidecar.transform`
does the work, off the event loop, within each transform's limits)."""

from __future__ import annotations

from typing import Final

from generated.integration.v1 import transform_pb2, transform_pb2_grpc
from sidecar.errors import ResourceExhausted
from sidecar.servicers._common import Context, require_name
from sidecar.transform import Transforms

__all__ = ["TransformServicer"]

_MAX_NAME: Final = 128
_ENVELOPE_BYTES: Final = 1024
"""Room left in a TransformResponse for its content type and framing."""


class TransformServicer(transform_pb2_grpc.TransformServiceServicer):
    """Serve TransformService over the configured transforms."""

    def __init__(self, transforms: Transforms, *, max_message_bytes: int) -> None:
        """`max_message_bytes` is the server's largest response message: an output larger
        than fits is RESOURCE_EXHAUSTED (RESULT_TOO_LARGE)."""
        self._transforms = transforms
        self._max_output = max_message_bytes - _ENVELOPE_BYTES

    async def Transform(
        self, request: transform_pb2.TransformRequest, context: Context
    ) -> transform_pb2.TransformResponse:
        name = require_name(request.transform, "transform", _MAX_NAME)
        output = await self._transforms.transform(name, request.input, request.content_type)
        if len(output.data) > self._max_output:
            raise ResourceExhausted(
                f"the output is {len(output.data)} bytes; the largest answer is {self._max_output}",
                reason="RESULT_TOO_LARGE",
                metadata={"transform": name},
            )
        return transform_pb2.TransformResponse(output=output.data, content_type=output.content_type)

    async def Validate(
        self, request: transform_pb2.ValidateRequest, context: Context
    ) -> transform_pb2.ValidateResponse:
        schema = require_name(request.schema, "schema", _MAX_NAME)
        report = await self._transforms.validate(schema, request.json)
        return transform_pb2.ValidateResponse(
            valid=report.valid,
            truncated=report.truncated,
            violations=[
                transform_pb2.SchemaViolation(
                    path=v.path, message=v.message, keyword=v.keyword, schema_path=v.schema_path
                )
                for v in report.violations
            ],
        )

    async def ListTransforms(
        self, request: transform_pb2.ListTransformsRequest, context: Context
    ) -> transform_pb2.ListTransformsResponse:
        return transform_pb2.ListTransformsResponse(
            transforms=[
                transform_pb2.TransformInfo(
                    name=info.name,
                    description=info.description,
                    steps=info.steps,
                    input_content_type=info.input_content_type,
                    output_content_type=info.output_content_type,
                    max_input_bytes=info.max_input_bytes,
                    max_depth=info.max_depth,
                )
                for info in self._transforms.describe()
            ],
            schemas=self._transforms.schema_names(),
        )
