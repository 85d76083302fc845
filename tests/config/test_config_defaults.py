"""With no config, or an empty one, the sidecar runs on documented defaults."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import BaseModel

import sidecar.config
from sidecar.config import (
    BulkheadConfig,
    BulkheadOverride,
    CircuitBreakerConfig,
    CircuitBreakerOverride,
    Config,
    ConnectionPoolConfig,
    ConnectionPoolOverride,
    RateLimitConfig,
    RateLimitOverride,
    RetryPolicyConfig,
    RetryPolicyOverride,
    TimeoutsConfig,
    TimeoutsOverride,
    load_config,
    parse_config,
)

MiB = 1024 * 1024

EXPECTED_DEFAULTS = {
    "server": {
        "listen": "127.0.0.1:50051",
        "tls": None,
        "unix_socket": {"mode": 0o600, "group": None},
        "max_receive_message_size": 4 * MiB,
        "max_send_message_size": 4 * MiB,
        "compression": "none",
        "event_loop": "uvloop",
        "shutdown_grace": 10.0,
        "reflection": True,
        "keepalive": {
            "time": 7200.0,
            "timeout": 20.0,
            "permit_without_calls": False,
            "min_ping_interval": 300.0,
        },
        "auth": {"tokens": (), "callers": {}},
        "inbound_rate_limits": {},
        "access_log": True,
        "log_level": "info",
    },
    "integration": {
        "connection_pools": {
            "default": {
                "min_connections": 2,
                "max_connections": 10,
                "acquire_timeout": 10.0,
                "idle_timeout": 300.0,
            }
        },
        "retry_policy": {
            "max_retries": 3,
            "base_delay": 1.0,
            "max_delay": 30.0,
            "backoff_multiplier": 2.0,
            "jitter": True,
            "budget_ratio": 0.2,
            "budget_min_retries_per_second": 10.0,
        },
        "circuit_breaker": {
            "enabled": True,
            "failure_threshold": 5,
            "reset_timeout": 30.0,
            "min_reset_timeout": 1.0,
            "monitoring_period": 10.0,
            "failure_ratio": 0.5,
            "minimum_throughput": 20,
            "half_open_max_calls": 1,
            "slow_call_duration": 10.0,
            "slow_call_ratio": 1.0,
        },
        "rate_limiting": {"default": None},
        "bulkhead": {"max_concurrent_calls": 100, "max_queued_calls": 100},
        "timeouts": {"connect": 10.0, "request": 30.0, "read": 30.0},
        "health_monitoring": {"check_interval": 30.0, "timeout": 5.0, "consecutive_failures": 3},
        "metrics": {
            "enabled": True,
            "export_interval": 15.0,
            "retention_period": 7 * 86400.0,
            "prometheus_listen": None,
            "otlp": None,
        },
        "tracing": None,
    },
    "connections": {},
    "services": {
        "cache": {
            "type": "cache",
            "backend": "memory",
            "default": False,
            "max_value_size": MiB,
            "max_key_length": 1024,
            "max_keys": 100_000,
            "near_cache": {
                "enabled": False,
                "max_entries": 10_000,
                "max_value_size": 64 * 1024,
                "max_ttl": 10.0,
            },
            "host": "127.0.0.1",
            "port": 6379,
            "database": 0,
            "username": None,
            "password": None,
            "tls": {
                "enabled": False,
                "ca_file": None,
                "cert_file": None,
                "key_file": None,
                "verify": True,
                "server_name": None,
            },
            "connection": None,
            "key_prefix": "",
            "retry_policy": None,
            "circuit_breaker": None,
            "rate_limit": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
        "pubsub": {
            "type": "pubsub",
            "backend": "memory",
            "url": None,
            "default": False,
            "subscriber_buffer": 1000,
            "max_payload_size": MiB,
            "reliable_topics": (),
            "max_stream_length": 100_000,
            "visibility_timeout": 30.0,
            "max_deliveries": 5,
            "host": "127.0.0.1",
            "port": 6379,
            "database": 0,
            "username": None,
            "password": None,
            "tls": {
                "enabled": False,
                "ca_file": None,
                "cert_file": None,
                "key_file": None,
                "verify": True,
                "server_name": None,
            },
            "connection": None,
            "key_prefix": "",
            "retry_policy": None,
            "circuit_breaker": None,
            "rate_limit": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
        "sql": {
            "type": "sql",
            "backend": "sqlite",
            "default": False,
            "connection": None,
            "dsn": None,
            "host": "127.0.0.1",
            "port": 5432,
            "database": None,
            "username": None,
            "password": None,
            "tls": {
                "enabled": False,
                "ca_file": None,
                "cert_file": None,
                "key_file": None,
                "verify": True,
                "server_name": None,
            },
            "path": ":memory:",
            "read_only": False,
            "allow_privileged_role": False,
            "stream_idle_timeout": 30.0,
            "max_stream_connections": None,
            "statement_cache_size": 100,
            "max_rows_per_query": 10_000,
            "stream_batch_size": 500,
            "retry_policy": None,
            "circuit_breaker": None,
            "rate_limit": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
        "echo": {
            "type": "ai_model",
            "provider": "echo",
            "default": False,
            "connection": None,
            "endpoint": None,
            "auth": {"type": "bearer", "token": None, "header": "api-key"},
            "limits": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "max_queue": 1000,
                "store": "local",
                "connection": None,
                "key_prefix": "",
            },
            "model": None,
            "models": (),
            "defaults": {"temperature": 0.7, "top_p": None, "max_tokens": 2048},
            "store": False,
            "coalesce_chunks": True,
            "headers": {},
            "query": {},
            "retry_policy": None,
            "circuit_breaker": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
        "objects": {
            "type": "objectstore",
            "backend": "local",
            "default": False,
            "root": None,
            "bucket": None,
            "connection": None,
            "part_size": 8 * 1024 * 1024,
            "max_concurrent_parts": 2,
            "max_object_size": 5 * 1024**3,
            "chunk_size": 256 * 1024,
            "max_keys_per_page": 1000,
            "stream_idle_timeout": 30.0,
            "presign_max_expiry": 604800.0,
            "retry_policy": None,
            "circuit_breaker": None,
            "rate_limit": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
        "queue": {
            "type": "queue",
            "backend": "memory",
            "default": False,
            "queue": None,
            "connection": None,
            "fifo": False,
            "content_based_deduplication": False,
            "visibility_timeout": 30.0,
            "max_receive_count": None,
            "dead_letter": None,
            "max_messages": 100000,
            "message_retention": 345600.0,
            "retry_policy": None,
            "circuit_breaker": None,
            "rate_limit": None,
            "bulkhead": None,
            "timeouts": None,
            "connection_pool": None,
        },
    },
    "schemas": {},
    "transforms": {},
}


def test_every_default_matches_the_documented_value() -> None:
    assert Config().model_dump() == EXPECTED_DEFAULTS


def test_no_config_file_means_the_embedded_defaults() -> None:
    assert load_config(None) == Config()


@pytest.mark.parametrize("text", ["", "   \n", "# everything commented out\n", "---\n"])
def test_empty_document_means_defaults(text: str) -> None:
    assert parse_config(text, environ={}) == Config()


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("")
    assert load_config(path, environ={}) == Config()


def test_section_with_every_line_commented_out_means_defaults() -> None:
    config = parse_config("server:\n  # listen: 0.0.0.0:50051\nservices:\n", environ={})
    assert config.server == Config().server
    assert set(config.services) == {"cache", "pubsub", "sql", "echo", "objects", "queue"}


def test_services_given_replace_the_default_services() -> None:
    config = parse_config("services:\n  kv: {type: cache}\n", environ={})
    assert set(config.services) == {"kv"}


def test_default_services_get_default_policies() -> None:
    config = Config()
    policies = config.policies_for("cache")
    assert policies.retry_policy == config.integration.retry_policy
    assert policies.connection_pool == config.integration.connection_pools.default
    assert policies.rate_limit is None


def _config_models() -> list[type[BaseModel]]:
    """Every pydantic model defined in any module of the `sidecar.config` package."""
    modules = [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(sidecar.config.__path__, "sidecar.config.")
    ]
    return [
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == module.__name__
    ]


def test_every_field_is_documented() -> None:
    models = _config_models()
    assert len(models) > 25
    undocumented = [
        f"{model.__module__}.{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("full", "partial"),
    [
        (RetryPolicyConfig, RetryPolicyOverride),
        (CircuitBreakerConfig, CircuitBreakerOverride),
        (RateLimitConfig, RateLimitOverride),
        (BulkheadConfig, BulkheadOverride),
        (TimeoutsConfig, TimeoutsOverride),
        (ConnectionPoolConfig, ConnectionPoolOverride),
    ],
)
def test_each_override_can_set_every_field_of_its_policy(
    full: type[BaseModel], partial: type[BaseModel]
) -> None:
    assert list(partial.model_fields) == list(full.model_fields)
    assert all(not field.is_required() for field in partial.model_fields.values())


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.server.listen = "0.0.0.0:1"
