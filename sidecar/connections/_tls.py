"""The client-side `ssl.SSLContext` of a connection's `tls:` settings, for the client libraries
that take one (asyncpg, httpx); every connection type reads `TlsConfig` the same way."""

from __future__ import annotations

import ssl

from sidecar.config.tls import TlsConfig

__all__ = ["client_ssl_context"]


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The context for `tls`, or None when TLS is off.

    It trusts `ca_file` (else the system's CAs), presents `cert_file`/`key_file` for mutual
    TLS, and with `verify: false` checks neither certificate nor name. The name checked is
    the host connected to, or `server_name` (the caller passes that as `server_hostname`).
    """
    if not tls.enabled:
        return None
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
