"""Sidecar configuration: one YAML file, `${ENV}` expansion, strict validation.

    config = load_config("sidecar.yaml")        # or load_config(None) for the defaults
    config.server.listen                         # "127.0.0.1:50051"
    config.policies_for("cache").retry_policy    # integration defaults + the service's overrides
    config.default_service("cache")              # the target an empty `target` means

Durations are float seconds and sizes int bytes once loaded; secrets are `SecretStr`.

Modules: `models` (`Config`, `ServicePolicies`, the policy merge), `server` (`server:`),
`policies` (`integration:` and the per-service overrides), `connections` (`connections:`),
`services` (one module per service type; its docstring says how to add one), `loader`
(YAML to `Config`, `ConfigError`), and the shared pieces `_common`, `_units`, `_address`,
`_expand`, `_paths`.
"""

from ._units import Bytes, DurationSeconds, parse_bytes, parse_duration
from .aws import AwsAssumeRole, AwsCredentials, AwsEndpoint
from .connections import (
    CONNECTION_TYPES,
    AwsConnectionConfig,
    ConnectionConfig,
    HttpConnectionConfig,
    PostgresConnectionConfig,
    RedisConnectionConfig,
    SqliteConnectionConfig,
)
from .http import HttpEndpoint
from .loader import ConfigError, load_config, parse_config
from .models import Config, ServicePolicies
from .policies import (
    BulkheadConfig,
    BulkheadOverride,
    CircuitBreakerConfig,
    CircuitBreakerOverride,
    ConnectionPoolConfig,
    ConnectionPoolOverride,
    ConnectionPoolsConfig,
    HealthMonitoringConfig,
    IntegrationConfig,
    MetricsConfig,
    RateLimitConfig,
    RateLimitingConfig,
    RateLimitOverride,
    RetryPolicyConfig,
    RetryPolicyOverride,
    TimeoutsConfig,
    TimeoutsOverride,
)
from .postgres import PostgresEndpoint
from .server import AuthConfig, InboundRateLimitConfig, KeepaliveConfig, ServerConfig
from .services import (
    SERVICE_TYPES,
    AIAliasServiceConfig,
    AIModelServiceConfig,
    CacheServiceConfig,
    CloudServiceConfig,
    ObjectStoreServiceConfig,
    PubSubServiceConfig,
    QueueServiceConfig,
    RedisConnectionSettings,
    RedisEndpoint,
    ServiceBase,
    ServiceConfig,
    SqlServiceConfig,
)
from .sqlite import SqliteEndpoint

__all__ = [
    "CONNECTION_TYPES",
    "SERVICE_TYPES",
    "AIAliasServiceConfig",
    "AIModelServiceConfig",
    "AuthConfig",
    "AwsAssumeRole",
    "AwsConnectionConfig",
    "AwsCredentials",
    "AwsEndpoint",
    "BulkheadConfig",
    "BulkheadOverride",
    "Bytes",
    "CacheServiceConfig",
    "CircuitBreakerConfig",
    "CircuitBreakerOverride",
    "CloudServiceConfig",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "ConnectionPoolConfig",
    "ConnectionPoolOverride",
    "ConnectionPoolsConfig",
    "DurationSeconds",
    "HealthMonitoringConfig",
    "HttpConnectionConfig",
    "HttpEndpoint",
    "InboundRateLimitConfig",
    "IntegrationConfig",
    "KeepaliveConfig",
    "MetricsConfig",
    "ObjectStoreServiceConfig",
    "PostgresConnectionConfig",
    "PostgresEndpoint",
    "PubSubServiceConfig",
    "QueueServiceConfig",
    "RateLimitConfig",
    "RateLimitOverride",
    "RateLimitingConfig",
    "RedisConnectionConfig",
    "RedisConnectionSettings",
    "RedisEndpoint",
    "RetryPolicyConfig",
    "RetryPolicyOverride",
    "ServerConfig",
    "ServiceBase",
    "ServiceConfig",
    "ServicePolicies",
    "SqlServiceConfig",
    "SqliteConnectionConfig",
    "SqliteEndpoint",
    "TimeoutsConfig",
    "TimeoutsOverride",
    "load_config",
    "parse_bytes",
    "parse_config",
    "parse_duration",
]
