"""The AI service types: `ai_model` (one upstream: provider, endpoint, auth, limits) and
`ai_alias` (a model name callers use, mapped to ordered deployments with fallback).

    services:
      openai:
        type: ai_model
        provider: openai                 # openai | anthropic | huggingface | echo
        endpoint: https://api.openai.com/v1
        auth: {type: bearer, token: "${OPENAI_API_KEY}"}
        rate_limit: {requests_per_minute: 3500, tokens_per_minute: 90000}
        model: gpt-4o-mini               # what `target: openai` uses
        defaults: {temperature: 0.7, max_tokens: 2048}
      local-llm:
        type: ai_model
        connection: gpu-pool             # an http connection: its base_url, TLS and pool
        model: llama-3.1-8b
      chat:
        type: ai_alias
        default: true
        deployments: [openai/gpt-4o, claude/claude-sonnet-4-5]
        cache: {target: cache, ttl: 1h}
        hedge: {after: 800ms}            # or {after: p95, floor: 200ms}
        reattach: {ttl: 10m, detached_grace: 30s}   # idempotency-key calls (sidecar.ai.reattach)

On an `ai_model` service `rate_limit` holds the specification's per-minute limits, applied
to each deployment (`service/model`) separately, instead of the generic requests-per-second
override other service types take there. `timeouts.request` bounds the wait for the first
chunk of each attempt (then the next deployment is tried), `timeouts.read` the gap between
chunks, and the caller's deadline the whole call. On an `ai_alias` only `retry_policy` of
the shared policy overrides applies: breakers, limits and timeouts belong to the deployments.

An `ai_model` service (all but echo) talks over an `http` connection: the one it names with
`connection:` (then the connection's `base_url` is its endpoint, and services naming one
connection share its client and pool), or else one of its own, named like the service.
Credentials (`auth`) and `headers` stay per service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, AtLeastZero, ConfigModel, PositiveRate, ServiceName
from .._units import Bytes, DurationSeconds, parse_duration
from ..policies import RateLimitStore
from .base import ServiceBase

__all__ = [
    "MAX_MODEL_NAME",
    "AIAliasRateLimitConfig",
    "AIAliasServiceConfig",
    "AIAuthConfig",
    "AIDeploymentConfig",
    "AIHedgeConfig",
    "AIModelDefaultsConfig",
    "AIModelServiceConfig",
    "AIPerCallerLimitConfig",
    "AIRateLimitConfig",
    "AIReattachConfig",
    "AIResponseCacheConfig",
    "huggingface_model_problem",
]

MAX_MODEL_NAME: Final = 256
"""Characters in a model name at most (a `service/model` target's model part)."""
_HUGGINGFACE_MODEL: Final = re.compile(
    r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*"
)
"""`org/name` ids: segments of letters, digits, `._-`, none starting with a dot (so no `.`
or `..`), joined by single slashes. Nothing that could end the path (`?`, `#`), escape it
(`%`, `\\`) or name a host (`@`, `:`)."""

DEFAULT_MODELS: Mapping[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "echo": "echo",
}
"""The model of a service that names none (huggingface has no sensible default)."""
_PERCENTILE: Final = re.compile(r"p\d+(?:\.\d+)?")


def huggingface_model_problem(model: str) -> str | None:
    """Why `model` may not go into a huggingface endpoint's `{model}`, or None if it may."""
    if len(model) > MAX_MODEL_NAME:
        return f"a model name has at most {MAX_MODEL_NAME} characters"
    if _HUGGINGFACE_MODEL.fullmatch(model) is None:
        return (
            f"{model!r} is not a Hugging Face model id: segments of letters, digits, '.', "
            "'_' and '-' (not starting with '.') joined by single '/'"
        )
    return None


def _model_placeholder_problem(endpoint: str) -> str | None:
    """`{model}` may only fill whole path segments: anywhere else a caller's model could
    choose the host, the query or the path's shape."""
    if "{model}" not in endpoint:
        return None
    parts = urlsplit(endpoint)
    if any("{model}" in part for part in (parts.scheme, parts.netloc, parts.query, parts.fragment)):
        return "{model} may only appear in the URL's path"
    if any("{model}" in segment and segment != "{model}" for segment in parts.path.split("/")):
        return "{model} must be a whole path segment (as in /models/{model})"
    return None


Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]


class AIAuthConfig(ConfigModel):
    """How the sidecar authenticates to the upstream."""

    type: Literal["bearer", "header", "none"] = Field(
        default="bearer",
        description="bearer: the provider's usual credential (OpenAI and Hugging Face "
        "`Authorization: Bearer`, Anthropic `x-api-key`); header: `token` in the header named "
        "by `header` (Azure OpenAI's api-key); none: send nothing. Default bearer.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="The API key; write it as a ${ENV} reference, never in the file. It never "
        "appears in repr, logs or dumps. Default null (no key).",
    )
    header: str = Field(
        default="api-key", description="Header carrying the token with type: header."
    )


class AIRateLimitConfig(ConfigModel):
    """Per-deployment limits (each `service/model` gets its own buckets)."""

    requests_per_minute: PositiveRate | None = Field(
        default=None, description="Requests started per minute. Default null (no limit)."
    )
    tokens_per_minute: PositiveRate | None = Field(
        default=None,
        description="Tokens per minute; each call reserves its prompt estimate plus max_tokens "
        "up front and settles with the real usage afterwards. Default null (no limit).",
    )
    max_queue: AtLeastZero = Field(
        default=1000,
        description="Calls that may wait for each limit (within their deadline); more are "
        "refused with RESOURCE_EXHAUSTED. Default 1000.",
    )
    store: RateLimitStore = Field(
        default="local",
        description="Where the budgets live: local is per sidecar process; redis is one budget "
        "per deployment shared by every sidecar on the same Redis (every pod in front of one "
        "API key), at `<key_prefix>sidecar:ratelimit:ai:<service>/<model>:requests` and "
        "`...:tokens`. If Redis is unreachable each sidecar limits locally until it is back. "
        "Default local.",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="With store: redis, the redis connection (under connections:) holding "
        "the budgets; required then. Default null.",
    )
    key_prefix: str = Field(
        default="",
        max_length=128,
        description="Prepended to the budgets' Redis keys (sidecars of separate environments "
        "on one Redis keep separate budgets). Default empty.",
    )

    @model_validator(mode="after")
    def _redis_store_needs_connection(self) -> AIRateLimitConfig:
        if self.store == "redis" and self.connection is None:
            raise PydanticCustomError(
                "redis_connection_missing",
                "store: redis needs connection (a redis connection under connections:)",
            )
        return self


class AIPerCallerLimitConfig(ConfigModel):
    """Budgets of each caller of an alias: one per distinct value of a request metadata key."""

    metadata_key: str = Field(
        default="x-tenant-id",
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="The gRPC metadata key naming the caller (lowercase). Its value (at most "
        "128 characters: letters, digits and . _ : @ + = / -, else INVALID_ARGUMENT) picks "
        "the budget; calls without it share one. Default x-tenant-id.",
    )
    requests_per_minute: PositiveRate | None = Field(
        default=None, description="Requests each caller starts per minute. Default null."
    )
    tokens_per_minute: PositiveRate | None = Field(
        default=None, description="Tokens each caller spends per minute. Default null."
    )
    max_callers: AtLeastOne = Field(
        default=10_000,
        description="Callers this sidecar keeps budgets for; beyond it the least recently "
        "seen is forgotten (with store: local its budget starts afresh; on Redis it stays). "
        "Default 10000.",
    )


class AIAliasRateLimitConfig(AIRateLimitConfig):
    """Budgets of an alias as a whole (every deployment together) and per caller, checked
    before its deployments' own; `store`, `connection` and `key_prefix` apply to both."""

    per_caller: AIPerCallerLimitConfig | None = Field(
        default=None, description="Budgets per caller identity. Default null (none)."
    )


class AIModelDefaultsConfig(ConfigModel):
    """Sampling settings a request gets when it sets none."""

    temperature: Temperature | None = Field(default=0.7, description="Default 0.7.")
    top_p: TopP | None = Field(default=None, description="Default null (the upstream's).")
    max_tokens: AtLeastOne | None = Field(default=2048, description="Default 2048.")


class AIModelServiceConfig(ServiceBase):
    """An AI model API (`type: ai_model`), served by AIService."""

    type: Literal["ai_model"] = Field(default="ai_model", description="Service type.")
    provider: Literal["openai", "anthropic", "huggingface", "echo"] = Field(
        default="openai",
        description="openai (also every OpenAI-compatible API: Azure OpenAI, vLLM, Ollama, "
        "TGI's /v1, Together, Groq ...), anthropic, huggingface (native TGI / Inference "
        "routes), or echo (the embedded stand-in: echoes the last user message). "
        "Default openai.",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="An http connection (under connections:) to talk over: its base_url is "
        "the endpoint, and its client, pool and TLS are shared with every service naming "
        "it. Not with endpoint, nor with provider echo. Default null: a connection of this "
        "service's own.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Base URL (https://api.openai.com/v1, https://api.anthropic.com, a TGI "
        "server, or for huggingface a URL with {model} as whole path segments). Default "
        "null: the connection's base_url, else the provider's public API; huggingface needs "
        "one or the other.",
    )
    auth: AIAuthConfig = Field(default_factory=AIAuthConfig, description="Credentials.")
    # The spec's per-minute limits sit under `rate_limit`, where other service types keep a
    # requests-per-second override; the inherited field moves out of the way (an alias no
    # one writes) so `Config.policies_for` never sees these limits.
    rate_limit: None = Field(
        default=None,
        alias="inherited_rate_limit",
        exclude=True,
        description="Not used by ai_model services: see `rate_limit` (the `limits` field).",
    )
    limits: AIRateLimitConfig = Field(
        default_factory=AIRateLimitConfig,
        alias="rate_limit",
        description="requests_per_minute and tokens_per_minute per deployment. Default none.",
    )
    model: str | None = Field(
        default=None,
        description="The model a bare `target: <service>` uses. Default gpt-4o-mini (openai), "
        "claude-3-5-haiku-latest (anthropic), echo (echo); required for huggingface.",
    )
    models: tuple[str, ...] = Field(
        default=(),
        description="Models a `service/model` target may name; empty allows any (at most 256 "
        "distinct ones). Default [].",
    )
    defaults: AIModelDefaultsConfig = Field(
        default_factory=AIModelDefaultsConfig, description="Sampling defaults."
    )
    store: bool = Field(
        default=False,
        description="openai only: ask OpenAI to store completions (for its evals and "
        "distillation), which is also the only way it accepts the requests' metadata. "
        "Default false: nothing is stored and metadata is not sent.",
    )
    coalesce_chunks: bool = Field(
        default=True,
        description="Merge chunks that arrive while a write to a slow caller is in flight "
        "into its next message (fewer gRPC writes); false sends one message per upstream "
        "chunk. Default true.",
    )
    headers: Mapping[str, str] = Field(
        default_factory=dict, description="Extra headers on every upstream request."
    )
    query: Mapping[str, str] = Field(
        default_factory=dict,
        description="Extra query parameters on every request (Azure's api-version).",
    )

    @field_validator("connection")
    @classmethod
    def _echo_has_no_upstream(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("provider") == "echo":
            raise PydanticCustomError(
                "connection_without_upstream",
                "provider echo talks to no upstream: remove connection",
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _model_only_in_the_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        connection = info.data.get("connection")
        if value is not None and connection is not None:
            raise PydanticCustomError(
                "endpoint_with_connection",
                "connection {connection} gives the endpoint (its base_url): set endpoint "
                "or connection, not both",
                {"connection": repr(connection)},
            )
        problem = _model_placeholder_problem(value) if value is not None else None
        if problem is not None:
            raise PydanticCustomError("model_placeholder", problem)
        return value

    @field_validator("model", "models")
    @classmethod
    def _huggingface_model_ids(cls, value: Any, info: ValidationInfo) -> Any:
        """A huggingface model goes into the endpoint's URL: the caller's rule applies."""
        if info.data.get("provider") != "huggingface" or value is None:
            return value
        for name in (value,) if isinstance(value, str) else value:
            problem = huggingface_model_problem(name)
            if problem is not None:
                raise PydanticCustomError("model_name", problem)
        return value

    @field_validator("limits", mode="before")
    @classmethod
    def _empty_limits_mean_none(cls, value: Any) -> Any:
        """`rate_limit:` with nothing under it means no limits, as other empty sections do."""
        return {} if value is None else value

    @property
    def backend(self) -> str:
        """The provider: what the backend registry builds."""
        return self.provider

    @property
    def default_model(self) -> str:
        """`model`, or the provider's default."""
        return self.model or DEFAULT_MODELS.get(self.provider, "")

    @model_validator(mode="after")
    def _huggingface_needs_endpoint_and_model(self) -> AIModelServiceConfig:
        if self.provider == "huggingface":
            needed = ("model",) if self.connection is not None else ("endpoint", "model")
            missing = [name for name in needed if not getattr(self, name)]
            if missing:
                raise PydanticCustomError(
                    "huggingface_settings",
                    "provider huggingface needs {missing}",
                    {"missing": " and ".join(missing)},
                )
        return self


class AIDeploymentConfig(ConfigModel):
    """One deployment of an alias: an `ai_model` service and a model on it."""

    service: ServiceName = Field(description="The ai_model service. Required.")
    model: str | None = Field(default=None, description="Default: the service's model.")


class AIResponseCacheConfig(ConfigModel):
    """Caching of deterministic answers (temperature 0 or a seed set)."""

    target: ServiceName = Field(default="cache", description="The cache service. Default cache.")
    ttl: DurationSeconds = Field(default=3600.0, description="How long answers live. Default 1h.")


class AIHedgeConfig(ConfigModel):
    """Hedged first chunk (see `sidecar.ai.hedge`): with no first chunk `after` this long,
    the next deployment starts too and the first to answer wins."""

    after: float | str = Field(
        description="A duration (800ms), or pNN (p50 to p99.9): that percentile of the "
        "deployment's recent times to first chunk (no hedge until it has 20). Required.",
    )
    floor: DurationSeconds = Field(
        default=0.05, description="With a percentile, never hedge sooner. Default 50ms."
    )

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> Any:
        """Keep `pNN` as written; anything else is a positive duration in seconds."""
        if isinstance(value, str) and _PERCENTILE.fullmatch(value.strip()):
            percent = float(value.strip()[1:])
            if not 50 <= percent < 100:
                raise PydanticCustomError(
                    "hedge_percentile",
                    "a percentile from p50 to below p100, got {value}",
                    {"value": value},
                )
            return value.strip()
        seconds = parse_duration(value)
        if seconds <= 0:
            raise PydanticCustomError("hedge_after", "must be a positive duration", {})
        return seconds

    @property
    def delay(self) -> float | None:
        """The fixed wait in seconds, or None with a percentile."""
        return self.after if isinstance(self.after, float) else None

    @property
    def percentile(self) -> float | None:
        """The percentile (95.0 for p95), or None with a fixed wait."""
        return float(self.after[1:]) if isinstance(self.after, str) else None


class AIReattachConfig(ConfigModel):
    """Re-attachable calls (see `sidecar.ai.reattach`): a chat call sent with an
    `idempotency-key` header runs detached from its caller, so a retry with the same key
    gets the whole answer from this sidecar while it runs, or from the alias's cache
    service (`cache.target`) for `ttl` once it has finished."""

    ttl: DurationSeconds = Field(
        default=600.0, description="How long a finished answer stays replayable. Default 10m."
    )
    detached_grace: DurationSeconds = Field(
        default=30.0,
        description="How long a running call with no caller attached keeps going before its "
        "upstream request is cancelled. Default 30s.",
    )
    max_calls: AtLeastOne = Field(
        default=1000,
        description="Keyed calls running at once on this alias (this sidecar); more are "
        "refused with RESOURCE_EXHAUSTED. Default 1000.",
    )
    max_buffered_bytes: Bytes = Field(
        default=1024 * 1024,
        description="Answer bytes kept per running call for callers that re-attach; a "
        "longer answer ends with RESOURCE_EXHAUSTED. Default 1MiB.",
    )


class AIAliasServiceConfig(ServiceBase):
    """A model alias (`type: ai_alias`): the name callers use for a list of deployments."""

    type: Literal["ai_alias"] = Field(default="ai_alias", description="Service type.")
    # As on ai_model: the alias's per-minute budgets sit under `rate_limit`, and the inherited
    # requests-per-second override moves out of the way.
    rate_limit: None = Field(
        default=None,
        alias="inherited_rate_limit",
        exclude=True,
        description="Not used by ai_alias services: see `rate_limit` (the `limits` field).",
    )
    limits: AIAliasRateLimitConfig | None = Field(
        default=None,
        alias="rate_limit",
        description="requests_per_minute and tokens_per_minute of the alias as a whole, and "
        "per_caller budgets. Default null (only the deployments' own).",
    )
    deployments: tuple[AIDeploymentConfig, ...] = Field(
        min_length=1,
        description="Tried in order; the next on UNAVAILABLE, RESOURCE_EXHAUSTED, an open "
        "circuit or a timeout, never after the first chunk. Each is {service, model} or "
        "'service/model'. Required.",
    )
    cache: AIResponseCacheConfig | None = Field(
        default=None, description="Response cache; null caches nothing. Default null."
    )
    hedge: AIHedgeConfig | None = Field(
        default=None,
        description="Hedged first chunk: start the next deployment too when the first chunk "
        "is late (at most one extra request per call, paid from the retry budget); null "
        "never hedges. Default null.",
    )
    reattach: AIReattachConfig | None = Field(
        default=None,
        description="Re-attachable calls for requests with an idempotency-key header; needs "
        "`cache` (where finished answers are kept). Null ignores the header. Default null.",
    )

    @field_validator("deployments", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """Accept `openai/gpt-4o` for `{service: openai, model: gpt-4o}`."""
        if not isinstance(value, list | tuple):
            return value
        return [
            dict(zip(("service", "model"), item.split("/", 1), strict=False))
            if isinstance(item, str)
            else item
            for item in value
        ]

    @model_validator(mode="after")
    def _reattach_needs_cache(self) -> AIAliasServiceConfig:
        """Finished answers are kept on the cache service, so other sidecars replay them."""
        if self.reattach is not None and self.cache is None:
            raise PydanticCustomError(
                "reattach_cache", "reattach needs cache: {target: <a cache service>}", {}
            )
        return self

    @property
    def backend(self) -> str:
        """Aliases have one implementation: the router."""
        return "router"
