"""`AwsEndpoint`: where AWS is and how to sign in: a region, credentials (from the
environment only), and an endpoint URL for S3-compatible or emulated services."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_core import PydanticCustomError

from ._common import ConfigModel

__all__ = ["AWS_ENDPOINT_FIELDS", "AwsCredentials", "AwsEndpoint", "region_required"]


class AwsCredentials(ConfigModel):
    """Static credentials; write each as a ${ENV} reference. Without them the default
    chain applies (environment, web identity, instance profile)."""

    access_key_id: SecretStr = Field(description="The access key id. Required.")
    secret_access_key: SecretStr = Field(description="The secret access key. Required.")
    session_token: SecretStr | None = Field(
        default=None, description="A session token, for temporary credentials. Default null."
    )


class AwsEndpoint(ConfigModel):
    """An AWS account in one region."""

    region: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
        description="AWS region (us-east-1). Required.",
    )
    credentials: AwsCredentials | None = Field(
        default=None, description="Static credentials; null uses the default chain."
    )
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="Send every call here instead of AWS (an emulator, or an S3-compatible "
        "store). Default null.",
    )


AWS_ENDPOINT_FIELDS = frozenset(AwsEndpoint.model_fields)


def region_required(endpoint: AwsEndpoint) -> None:
    """Refuse an endpoint without its region (a model validator's check)."""
    if endpoint.region is None:
        raise PydanticCustomError("region_missing", "region is required (us-east-1, ...)")
