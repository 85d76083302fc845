"""The aws settings (connections and `type: cloud` services): assume_role, addressing_style
and tls are checked at load, and map onto aiobotocore's client options."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from sidecar.config import AwsEndpoint, ConfigError, parse_config
from sidecar.connections.aws import client_options

ROLE = "arn:aws:iam::123456789012:role/sidecar"


def aws(extra: str) -> AwsEndpoint:
    config = parse_config(f"connections:\n  a: {{type: aws, region: us-east-1, {extra}}}\n")
    endpoint = config.connections["a"]
    assert isinstance(endpoint, AwsEndpoint)
    return endpoint


def test_assume_role_defaults() -> None:
    role = aws(f"assume_role: {{role_arn: '{ROLE}'}}").assume_role
    assert role is not None
    assert (role.session_name, role.external_id, role.duration) == (
        "integration-sidecar",
        None,
        3600.0,
    )


def test_the_external_id_is_a_secret_from_the_environment() -> None:
    role = f"{{role_arn: '{ROLE}', external_id: '${{EXT}}'}}"
    text = f"connections:\n  a: {{type: aws, region: us-east-1, assume_role: {role}}}\n"
    endpoint = parse_config(text, environ={"EXT": "s3cr3t"}).connections["a"]
    assert isinstance(endpoint, AwsEndpoint) and endpoint.assume_role is not None
    assert endpoint.assume_role.external_id is not None
    assert endpoint.assume_role.external_id.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(endpoint)


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ("assume_role: {role_arn: 'arn:aws:iam::12:role/x'}", "assume_role.role_arn"),
        ("assume_role: {role_arn: 'not-an-arn-at-all-really'}", "assume_role.role_arn"),
        (f"assume_role: {{role_arn: '{ROLE}', duration: 5m}}", "assume_role.duration"),
        (f"assume_role: {{role_arn: '{ROLE}', duration: 13h}}", "assume_role.duration"),
        (f"assume_role: {{role_arn: '{ROLE}', session_name: 'a b'}}", "session_name"),
        ("addressing_style: dns", "addressing_style"),
        ("endpoint_url: 'http://127.0.0.1:9000', tls: true", "https://"),
    ],
)
def test_bad_aws_settings_are_refused_at_load(extra: str, found: str) -> None:
    with pytest.raises(ConfigError) as raised:
        aws(extra)
    assert found in str(raised.value)


def test_a_cloud_service_on_a_connection_takes_no_inline_aws_settings() -> None:
    text = (
        "connections:\n  acct: {type: aws, region: us-east-1}\n"
        "services:\n  aws: {type: cloud, connection: acct, addressing_style: path}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert "addressing_style belong to connection 'acct'" in str(raised.value)


def test_client_options_map_timeouts_pool_retries_and_addressing() -> None:
    options = client_options(
        aws("endpoint_url: 'http://127.0.0.1:9000', addressing_style: path"),
        connect_timeout=1.5,
        read_timeout=4.0,
        max_pool_connections=33,
    )
    config = options.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 4.0)
    assert config.max_pool_connections == 33
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.s3 == {"addressing_style": "path"}
    assert (options.endpoint_url, options.region, options.verify) == (
        "http://127.0.0.1:9000",
        "us-east-1",
        None,
    )
    assert config.client_cert is None


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("aws-tls")
    ca = trustme.CA()
    client = ca.issue_cert("sidecar")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    return folder / "ca.pem", folder / "client.pem", folder / "client.key"


def test_tls_maps_to_botocore_verify_and_client_cert(pem_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pem_files
    endpoint = "endpoint_url: 'https://10.0.0.1:9000'"
    mutual = aws(f"{endpoint}, tls: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}")
    options = client_options(mutual, connect_timeout=1, read_timeout=1, max_pool_connections=1)
    assert options.verify == str(ca)
    assert options.config.client_cert == (str(cert), str(key))
    unchecked = aws(f"{endpoint}, tls: {{verify: false}}")
    options = client_options(unchecked, connect_timeout=1, read_timeout=1, max_pool_connections=1)
    assert options.verify is False
    named = aws(f"{endpoint}, tls: {{server_name: minio.internal}}")
    options = client_options(named, connect_timeout=1, read_timeout=1, max_pool_connections=1)
    assert options.verify is None  # the system's CAs, with the name below
    assert options.config.http_session_cls.__name__ == "ServerNameSession"
