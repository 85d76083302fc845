"""Which service answers a request with an empty `target`."""

from __future__ import annotations

import pytest

from sidecar.config import Config, ConfigError, parse_config


def _config(services: str) -> Config:
    return parse_config("services:\n" + services, environ={})


def test_service_marked_default_wins() -> None:
    config = _config(
        "  cache: {type: cache}\n  hot: {type: cache, default: true}\n  cold: {type: cache}\n"
    )
    assert config.default_service("cache") == "hot"


def test_only_service_of_a_type_is_the_default() -> None:
    config = _config("  sessions: {type: cache}\n  events: {type: pubsub}\n")
    assert config.default_service("cache") == "sessions"
    assert config.default_service("pubsub") == "events"


def test_service_named_like_its_type_is_the_default_among_several() -> None:
    config = _config("  cache: {type: cache}\n  other: {type: cache}\n")
    assert config.default_service("cache") == "cache"


def test_no_default_when_several_services_and_none_stands_out() -> None:
    config = _config("  a: {type: cache}\n  b: {type: cache}\n")
    assert config.default_service("cache") is None


def test_no_default_for_a_type_without_services() -> None:
    config = _config("  a: {type: cache}\n")
    assert config.default_service("pubsub") is None


def test_name_matching_another_type_does_not_count() -> None:
    config = _config("  pubsub: {type: cache}\n  other: {type: cache}\n")
    assert config.default_service("pubsub") is None
    assert config.default_service("cache") is None


def test_embedded_defaults_have_a_default_cache_and_pubsub() -> None:
    config = parse_config("", environ={})
    assert config.default_service("cache") == "cache"
    assert config.default_service("pubsub") == "pubsub"


def test_two_defaults_of_one_type_are_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        _config(
            "  a: {type: cache, default: true}\n  b: {type: cache, default: true}\n"
            "  c: {type: pubsub, default: true}\n"
        )
    assert caught.value.problems == [
        (
            "services",
            "2 cache services have default: true (a, b); at most one per type may",
        )
    ]
