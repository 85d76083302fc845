"""`CloudServiceConfig`: a cloud account (`type: cloud`), as the specification writes it:

    services:
      aws:
        type: cloud
        region: us-east-1
        credentials:
          access_key_id: ${AWS_ACCESS_KEY_ID}
          secret_access_key: ${AWS_SECRET_ACCESS_KEY}

Its settings make an AWS connection named like the service (or it names one with
`connection:`); the AWS capabilities (object storage, queues, functions) build on it.

`allow:` lists the AWS operations AwsService may call on it, as `service:Operation`
patterns (`dynamodb:GetItem`, `dynamodb:*`, `sns:Publish`, `dynamodb:Batch*`); the default,
empty, allows none. The list is checked before any request is sent, so a sidecar handed to
an application grants exactly these operations whatever its credentials could do.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .._common import ServiceName
from ..aws import AWS_ENDPOINT_FIELDS, AwsEndpoint, region_required
from .base import ServiceBase

__all__ = ["MAX_ALLOWED_OPERATIONS", "AwsOperationPattern", "CloudServiceConfig"]

MAX_ALLOWED_OPERATIONS = 256
"""Most patterns in one service's `allow:` list."""

_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}:[A-Za-z0-9*]{1,128}\Z")


def _operation_pattern(value: str) -> str:
    if not _PATTERN.match(value):
        raise PydanticCustomError(
            "aws_operation_pattern",
            "{value} is not service:Operation (the AWS service name in lower case as botocore "
            "spells it, an operation name or pattern of letters, digits and *: 'dynamodb:GetItem', "
            "'dynamodb:*', 'sns:Publish')",
            {"value": repr(value[:140])},
        )
    return value


AwsOperationPattern = Annotated[str, AfterValidator(_operation_pattern)]
"""`service:Operation`: `dynamodb:GetItem`, `dynamodb:*`, `dynamodb:Batch*`."""


class CloudServiceConfig(AwsEndpoint, ServiceBase):
    """A cloud account; AWS today."""

    type: Literal["cloud"] = Field(default="cloud", description="Service type.")
    provider: Literal["aws"] = Field(default="aws", description="The cloud. Default aws.")
    connection: ServiceName | None = Field(
        default=None,
        description="An aws connection (under connections:) to use instead of region, "
        "credentials and endpoint_url here. Default null.",
    )
    allow: tuple[AwsOperationPattern, ...] = Field(
        default=(),
        max_length=MAX_ALLOWED_OPERATIONS,
        description="The AWS operations AwsService may call on this account, as "
        "service:Operation patterns ('dynamodb:GetItem', 'dynamodb:*', 'sns:Publish'; * "
        f"matches any run of characters); at most {MAX_ALLOWED_OPERATIONS}. Anything else is "
        "refused (PERMISSION_DENIED, OPERATION_NOT_ALLOWED) before a request is sent. "
        "Default [] (none).",
    )

    @model_validator(mode="after")
    def _inline_or_connection(self) -> CloudServiceConfig:
        if self.connection is None:
            region_required(self)
            return self
        inline = sorted(AWS_ENDPOINT_FIELDS & self.model_fields_set)
        if inline:
            raise PydanticCustomError(
                "inline_aws_with_connection",
                "{names} belong to connection {connection}; remove them here",
                {"names": ", ".join(inline), "connection": repr(self.connection)},
            )
        return self

    @property
    def backend(self) -> str:
        """The provider: what the backend registry builds."""
        return self.provider
