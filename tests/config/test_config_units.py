"""Durations become float seconds and sizes int bytes; bad ones say what is accepted."""

from __future__ import annotations

import pytest
from pydantic_core import PydanticCustomError

from sidecar.config import ConfigError, parse_bytes, parse_config, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2s500ms", 2.5),
        (" 10s ", 10.0),
        (10, 10.0),
        (0.25, 0.25),
        ("30", 30.0),
        ("0.5", 0.5),
    ],
)
def test_durations_are_parsed_to_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["5 minutes", "soon", "1m 30s", "10S", "-5s", "ms", "", "1.s", True, None, [1]]
)
def test_bad_durations_explain_the_accepted_form(value: object) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        parse_duration(value)
    assert caught.value.message() == (
        f"invalid duration {value!r}: use a number with ms, s, m, h or d"
    )


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("4MiB", 4 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1MB", 1_000_000),
        ("10GiB", 10 * 1024**3),
        ("1.5KiB", 1536),
        ("100B", 100),
        (1024, 1024),
        (2048.0, 2048),
        ("4096", 4096),
    ],
)
def test_sizes_are_parsed_to_bytes(value: object, size: int) -> None:
    assert parse_bytes(value) == size


@pytest.mark.parametrize("value", ["4 megs", "4mib", "1.5", "0.1KiB", "MiB", 1.5, False, None])
def test_bad_sizes_explain_the_accepted_form(value: object) -> None:
    with pytest.raises(PydanticCustomError) as caught:
        parse_bytes(value)
    assert caught.value.message().startswith(f"invalid size {value!r}: use a whole number of bytes")


def test_durations_and_sizes_in_a_config_are_converted() -> None:
    config = parse_config(
        "server:\n  shutdown_grace: 1m30s\n  max_receive_message_size: 16MiB\n"
        "integration:\n  retry_policy: {base_delay: 250ms}\n",
        environ={},
    )
    assert config.server.shutdown_grace == 90.0
    assert config.server.max_receive_message_size == 16 * 1024**2
    assert config.integration.retry_policy.base_delay == 0.25


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return caught.value.problems


def test_bad_duration_in_a_config_is_reported_at_its_path() -> None:
    assert _problems("integration:\n  timeouts: {connect: 5 minutes}\n") == [
        (
            "integration.timeouts.connect",
            "invalid duration '5 minutes': use a number with ms, s, m, h or d",
        )
    ]


def test_durations_and_sizes_must_be_positive() -> None:
    assert _problems(
        "server:\n  shutdown_grace: 0\n  max_send_message_size: 0\n"
        "services:\n  kv: {type: cache, max_value_size: -1}\n"
    ) == [
        ("server.shutdown_grace", "must be > 0"),
        ("server.max_send_message_size", "must be > 0"),
        ("services.kv.max_value_size", "must be > 0"),
    ]


def test_grpc_message_size_fits_a_c_int() -> None:
    assert _problems("server:\n  max_receive_message_size: 2GiB\n") == [
        ("server.max_receive_message_size", "must be <= 2147483647")
    ]
