"""`TlsConfig`: how a connection speaks TLS: on or off, which CA to trust, the client
certificate for mutual TLS, and whether to verify the server.

    tls: true                                   # TLS, trusting the system's CAs
    tls:
      ca_file: /etc/ssl/internal-ca.pem         # trust this CA bundle instead
      cert_file: /var/run/secrets/client.crt    # mutual TLS: present this certificate
      key_file: /var/run/secrets/client.key
      verify: true                              # false: no certificate or name check
      server_name: redis.internal               # check (and send as SNI) this name, not the host
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, FilePath, model_validator
from pydantic_core import PydanticCustomError

from ._common import ConfigModel

__all__ = ["TlsConfig"]


class TlsConfig(ConfigModel):
    """TLS to an upstream; `true`/`false` is short for `{enabled: true/false}`, and a
    non-empty section without `enabled` turns TLS on."""

    enabled: bool = Field(default=False, description="Connect with TLS. Default false.")
    ca_file: FilePath | None = Field(
        default=None,
        description="PEM bundle of the CAs to trust; null trusts the system's. Default null.",
    )
    cert_file: FilePath | None = Field(
        default=None,
        description="PEM client certificate for mutual TLS (with key_file). Default null.",
    )
    key_file: FilePath | None = Field(
        default=None,
        description="PEM private key of cert_file; mount it as a secret file. Default null.",
    )
    verify: bool = Field(
        default=True,
        description="Check the server's certificate and name; false accepts any server (for "
        "tests only: it allows a man in the middle). Default true.",
    )

    server_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="The name the server's certificate must carry, also sent as SNI, when it "
        "differs from the host you connect to (an IP address, a tunnel, a proxy). Default "
        "null: the host.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": value}
        if isinstance(value, dict):  # {} is the default: off
            return {**value, "enabled": True} if value and "enabled" not in value else value
        if isinstance(value, TlsConfig):
            return value
        raise PydanticCustomError("bool_type", "Input should be true, false or a section")

    @model_validator(mode="after")
    def _key_with_certificate(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise PydanticCustomError(
                "tls_cert_without_key", "cert_file and key_file go together: set both or neither"
            )
        return self
