"""Build the backend objects of `ai_model` and `ai_alias` services from their config.

Called by the runtime with a service's settings, its resolved policies, the pipeline
options it made of them (so routing never reaches up into the runtime) and the http
connection the service talks over (its named one, or its own). A
provider module (and with it the HTTP stack) is imported only here, and only for providers
that are configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.ai.budgets import AliasLimits, CallerLimits
from sidecar.ai.hedge import HedgePolicy
from sidecar.ai.pipelines import SharedLimiters, budget_key
from sidecar.ai.services import (
    AliasService,
    DeploymentRef,
    ModelDefaults,
    ModelService,
    TokenLimits,
)
from sidecar.backends.ai.base import ChatProvider, UpstreamTimeouts
from sidecar.config import AIAliasServiceConfig, AIModelServiceConfig, ServicePolicies
from sidecar.config.services.ai import AIAliasRateLimitConfig, AIHedgeConfig, AIRateLimitConfig
from sidecar.resilience import Clock, PipelineOptions, RateLimit, RateLimiter

if TYPE_CHECKING:
    from sidecar.connections import Connection
    from sidecar.connections.http.connection import HttpConnection

__all__ = ["alias_service", "model_service", "provider_for"]


def provider_for(
    settings: AIModelServiceConfig, connection: HttpConnection | None = None
) -> ChatProvider:
    """The provider client of an `ai_model` service's settings, on `connection`'s HTTP
    client (None: one of the provider's own). The endpoint is the service's, else the
    connection's base URL, else the provider's public API."""
    auth = settings.auth
    token = auth.token.get_secret_value() if auth.token is not None else None
    headers = dict(settings.headers)
    api_key = None
    if auth.type == "bearer":
        api_key = token
    elif auth.type == "header" and token:
        headers[auth.header] = token
    query = dict(settings.query)
    http = connection.client if connection is not None else None
    endpoint = settings.endpoint
    if endpoint is None and connection is not None:
        endpoint = connection.base_url
    if settings.provider == "openai":
        from sidecar.backends.ai.openai import OpenAIProvider

        return OpenAIProvider(
            endpoint=endpoint,
            api_key=api_key,
            headers=headers,
            query=query,
            store=settings.store,
            http=http,
        )
    if settings.provider == "anthropic":
        from sidecar.backends.ai.anthropic import AnthropicProvider

        return AnthropicProvider(
            endpoint=endpoint, api_key=api_key, headers=headers, query=query, http=http
        )
    if settings.provider == "huggingface":
        from sidecar.backends.ai.huggingface import HuggingFaceProvider

        assert endpoint is not None  # the config requires one, or a connection, for huggingface
        return HuggingFaceProvider(
            endpoint=endpoint, api_key=api_key, headers=headers, query=query, http=http
        )
    from sidecar.backends.ai.echo import EchoProvider

    return EchoProvider()


def model_service(
    settings: AIModelServiceConfig,
    policies: ServicePolicies,
    options: PipelineOptions,
    connection: Connection | None = None,
    budgets: Connection | None = None,
) -> ModelService:
    """The backend of an `ai_model` service, on its http connection (None for echo, or a
    client of the provider's own), with its budgets on the redis connection `budgets` when
    `rate_limit.store` is redis."""
    http: HttpConnection | None = None
    if connection is not None:  # never for echo: it must not import an HTTP stack
        from sidecar.connections.http.connection import HttpConnection

        assert isinstance(connection, HttpConnection), connection
        http = connection
    timeouts = policies.timeouts
    defaults = settings.defaults
    limits = settings.limits
    return ModelService(
        provider=provider_for(settings, http),
        model=settings.default_model,
        models=tuple(settings.models),
        defaults=ModelDefaults(defaults.temperature, defaults.top_p, defaults.max_tokens),
        limits=TokenLimits(limits.requests_per_minute, limits.tokens_per_minute, limits.max_queue),
        timeouts=UpstreamTimeouts(connect=timeouts.connect, read=timeouts.read),
        first_chunk_timeout=timeouts.request,
        circuit_breaker=options.circuit_breaker,
        retry=options.retry,
        coalesce=settings.coalesce_chunks,
        bulkhead=options.bulkhead,
        shared_limits=_redis_budgets(limits, budgets),
    )


def _redis_budgets(
    limits: AIRateLimitConfig, connection: Connection | None
) -> SharedLimiters | None:
    """With `store: redis`, the buckets of each scope on Redis, keyed by `budget_key` (a
    deployment's scope is `service/model`, an alias's its name)."""
    if limits.store != "redis":
        return None
    from sidecar.backends.ratelimit.redis import RedisTokenBucket
    from sidecar.connections.redis import RedisConnection

    assert isinstance(connection, RedisConnection), connection  # checked by the runtime
    redis = connection

    def shared(scope: str, limit: RateLimit, clock: Clock) -> RateLimiter:
        key = budget_key(limits.key_prefix, scope, limit.name)
        return RedisTokenBucket(redis, key, limit.options, clock=clock, name=scope)

    return shared


def alias_service(
    settings: AIAliasServiceConfig, options: PipelineOptions, budgets: Connection | None = None
) -> AliasService:
    """The backend of an `ai_alias` service, with its budgets on the redis connection
    `budgets` when `rate_limit.store` is redis."""
    retry = options.retry
    cache = settings.cache
    return AliasService(
        deployments=tuple(DeploymentRef(d.service, d.model) for d in settings.deployments),
        retry=retry,
        cache_target=cache.target if cache is not None else None,
        cache_ttl=cache.ttl if cache is not None else 3600.0,
        hedge=_hedge(settings.hedge),
        limits=_alias_limits(settings.limits, budgets),
    )


def _alias_limits(
    settings: AIAliasRateLimitConfig | None, connection: Connection | None
) -> AliasLimits | None:
    if settings is None:
        return None
    caller = settings.per_caller
    return AliasLimits(
        requests_per_minute=settings.requests_per_minute,
        tokens_per_minute=settings.tokens_per_minute,
        max_queue=settings.max_queue,
        per_caller=CallerLimits(
            caller.metadata_key,
            caller.requests_per_minute,
            caller.tokens_per_minute,
            caller.max_callers,
        )
        if caller is not None
        else None,
        shared=_redis_budgets(settings, connection),
    )


def _hedge(settings: AIHedgeConfig | None) -> HedgePolicy | None:
    if settings is None:
        return None
    return HedgePolicy(settings.delay, settings.percentile, settings.floor)
