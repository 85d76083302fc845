"""Certificates for the security tests: a `trustme` CA, and client certificates carrying URI
SANs (SPIFFE IDs), which trustme cannot issue, signed by that CA's key with `cryptography`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientCert", "client_cert", "write_server_files"]


@dataclass(frozen=True)
class ClientCert:
    key: bytes
    chain: bytes


def client_cert(ca: trustme.CA, *names: str) -> ClientCert:
    """A client certificate `ca` signed, with `names` as SANs (URIs if they have `://`)."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(n) if "://" in n else x509.DNSName(n) for n in names
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return ClientCert(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def write_server_files(ca: trustme.CA, folder: Path, *hosts: str) -> tuple[Path, Path]:
    """A server certificate for `hosts` (default localhost, 127.0.0.1) written into
    `folder` as tls.crt and tls.key; returns their paths."""
    cert = ca.issue_cert(*(hosts or ("localhost", "127.0.0.1")))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path
