"""Fixtures of the security tests: a CA and the files of a server certificate it signed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from security.certs import write_server_files


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    """tls.crt, tls.key and ca.crt (the CA that signs server and client certificates)."""
    cert, key = write_server_files(ca, tmp_path / "tls")
    ca_path = tmp_path / "tls" / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    return cert, key, ca_path
