"""`AwsEndpoint`: where AWS is and how to sign in: a region, credentials (from the
environment only, or the default provider chain), a role to assume, an endpoint URL for
S3-compatible or emulated services, and how to reach it (S3 addressing style, TLS).

    region: eu-west-1
    credentials:                       # omit to use the default chain (env, profile, IRSA)
      access_key_id: ${AWS_ACCESS_KEY_ID}
      secret_access_key: ${AWS_SECRET_ACCESS_KEY}
    assume_role:
      role_arn: arn:aws:iam::123456789012:role/sidecar
      external_id: ${AWS_EXTERNAL_ID}
      duration: 1h
    endpoint_url: http://minio:9000
    addressing_style: path
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel
from ._units import DurationSeconds
from .tls import TlsConfig

__all__ = [
    "AWS_ENDPOINT_FIELDS",
    "AwsAssumeRole",
    "AwsCredentials",
    "AwsEndpoint",
    "region_required",
]


class AwsCredentials(ConfigModel):
    """Static credentials; write each as a ${ENV} reference. Without them the default
    chain applies (environment, web identity, instance profile)."""

    access_key_id: SecretStr = Field(description="The access key id. Required.")
    secret_access_key: SecretStr = Field(description="The secret access key. Required.")
    session_token: SecretStr | None = Field(
        default=None, description="A session token, for temporary credentials. Default null."
    )


class AwsAssumeRole(ConfigModel):
    """A role the connection assumes (STS AssumeRole) with its base credentials; the
    temporary credentials are refreshed before they expire."""

    role_arn: str = Field(
        min_length=20,
        max_length=2048,
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$",
        description="ARN of the role (arn:aws:iam::123456789012:role/name). Required.",
    )
    session_name: str = Field(
        default="integration-sidecar",
        min_length=2,
        max_length=64,
        pattern=r"^[\w+=,.@-]+$",
        description="The role session name, seen in CloudTrail. Default integration-sidecar.",
    )
    external_id: SecretStr | None = Field(
        default=None,
        description="The external id the role's trust policy requires; write it as a ${ENV} "
        "reference. Default null.",
    )
    duration: DurationSeconds = Field(
        default=3600.0,
        ge=900.0,
        le=43200.0,
        description="Lifetime of the temporary credentials, 15m to 12h (the role's maximum "
        "session duration bounds it). Default 1h.",
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
    assume_role: AwsAssumeRole | None = Field(
        default=None,
        description="A role to assume with the credentials above (or the default chain's). "
        "Default null.",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="S3 bucket addressing: path (endpoint/bucket/key, what MinIO and moto "
        "want), virtual (bucket.endpoint/key) or auto (botocore's choice). Default auto.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS to an https endpoint: the CA bundle to trust, a client certificate, "
        "verify, server_name. AWS itself always speaks TLS with the system's CAs; this "
        "section is for endpoint_url. Default off (botocore's defaults).",
    )

    @model_validator(mode="after")
    def _tls_needs_https(self) -> AwsEndpoint:
        url = self.endpoint_url
        if self.tls.enabled and url is not None and url.startswith("http://"):
            raise PydanticCustomError(
                "tls_with_http_endpoint",
                "tls is set but endpoint_url is http://; use https:// or remove tls",
            )
        return self


AWS_ENDPOINT_FIELDS = frozenset(AwsEndpoint.model_fields)


def region_required(endpoint: AwsEndpoint) -> None:
    """Refuse an endpoint without its region (a model validator's check)."""
    if endpoint.region is None:
        raise PydanticCustomError("region_missing", "region is required (us-east-1, ...)")
