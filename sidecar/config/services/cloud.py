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
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .._common import ServiceName
from ..aws import AWS_ENDPOINT_FIELDS, AwsEndpoint, region_required
from .base import ServiceBase

__all__ = ["CloudServiceConfig"]


class CloudServiceConfig(AwsEndpoint, ServiceBase):
    """A cloud account; AWS today."""

    type: Literal["cloud"] = Field(default="cloud", description="Service type.")
    provider: Literal["aws"] = Field(default="aws", description="The cloud. Default aws.")
    connection: ServiceName | None = Field(
        default=None,
        description="An aws connection (under connections:) to use instead of region, "
        "credentials and endpoint_url here. Default null.",
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
