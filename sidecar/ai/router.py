"""`AIRouter`: turns a request's `target` into a `Route` over the configured AI services.

A target is one of:

- an `ai_alias` service name: its deployments, in order, with its retry policy and cache;
- an `ai_model` service name: that service's default model;
- `service/model`: one deployment (the model may contain further slashes, as Hugging Face
  model ids do);
- empty: the default alias, else the default `ai_model` service.

Deployments are built once per `(service, model)` and shared by every route naming them,
so an alias and a direct target on the same model share one breaker and one budget (their
pipeline is kept by the `ModelService`). Each service's default deployment and every alias's
deployments are built with the router, so their breakers are reported from start-up.
Alias references are checked when the router is built: a typo fails start-up, not a call.
An alias with `reattach:` also gets its registry of re-attachable calls (`calls`, see
`sidecar.ai.reattach`), on its cache service.

Usage:

    router = AIRouter(integrations, clock=clock)
    route = router.route("chat")
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from sidecar.ai.deployment import Deployment
from sidecar.ai.reattach import CallRegistry, ReattachPolicy
from sidecar.ai.response_cache import ResponseCache
from sidecar.ai.route import Route
from sidecar.ai.services import AliasService, ModelService
from sidecar.config.services.ai import MAX_MODEL_NAME
from sidecar.errors import InvalidArgument, NotFound
from sidecar.resilience import (
    SYSTEM_CLOCK,
    CircuitState,
    Clock,
    EventListener,
    RetryBudget,
    RetryOptions,
)

__all__ = ["AIConfigError", "AIRouter", "TargetInfo"]

_MAX_ADHOC_MODELS: Final = 256
"""Distinct `service/model` targets a service without a `models:` list may serve."""


class AIConfigError(ValueError):
    """An alias names a service or cache that is not configured (found at start-up)."""


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """One target a request may name (for ListModels)."""

    target: str
    kind: str
    deployments: tuple[str, ...]
    provider: str = ""
    default: bool = False
    response_cache: bool = False


class AIRouter:
    """Resolves targets over the `ai_model` and `ai_alias` integrations.

    Args:
        integrations: Every integration (`name`, `type`, `backend`, `is_default`); `cache`
            ones are looked up for alias response caches.
        clock: Time for breakers, buckets, cooldowns and retry sleeps.
        random: Jitter source for retry backoff.

    Raises:
        AIConfigError: An alias names an unknown `ai_model` service or `cache` service.
    """

    def __init__(
        self,
        integrations: Iterable[Any],
        *,
        clock: Clock = SYSTEM_CLOCK,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._clock = clock
        self._random = random
        items = list(integrations)
        self._services: dict[str, Any] = {i.name: i for i in items if i.type == "ai_model"}
        caches = {i.name: i for i in items if i.type == "cache"}
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._observers: list[Callable[[Deployment], EventListener]] = []
        self._adhoc: dict[str, int] = {}
        for name, service in self._services.items():
            self._deployment(name, service.backend.model)
        self._routes: dict[str, Route] = {}
        self._aliases: list[str] = []
        self._calls: dict[str, CallRegistry] = {}
        self._default = ""
        for item in items:
            if item.type == "ai_alias":
                route = self._routes[item.name] = self._alias_route(item.name, item.backend, caches)
                self._aliases.append(item.name)
                self._add_calls(route, getattr(item.settings, "reattach", None))
                if item.is_default:
                    self._default = item.name
        if not self._default:
            self._default = next(
                (i.name for i in items if i.type == "ai_model" and i.is_default), ""
            )

    def route(self, target: str) -> Route:
        """The route of a target.

        Raises:
            NotFound: No alias, service or deployment by that name (TARGET_NOT_FOUND).
            InvalidArgument: A `service/model` target names a model the service does not
                list, or one too many unlisted models.
        """
        route = self._routes.get(target)
        if route is not None:
            return route
        if not target:
            if not self._default:
                raise self._unknown("(default)")
            return self.route(self._default)
        service_name, _, model = target.partition("/")
        service = self._services.get(service_name)
        if service is None or (not model and "/" in target):
            raise self._unknown(target)
        settings: ModelService = service.backend
        if not model:
            route = self._single(target, "service", service_name, settings.model, settings.retry)
        else:
            self._check_model(service_name, settings, model)
            route = self._single(target, "deployment", service_name, model, settings.retry)
        self._routes[target] = route
        return route

    def calls(self, route: Route) -> CallRegistry | None:
        """The re-attachable calls of `route` (an alias with `reattach:`), else None."""
        return self._calls.get(route.name) if route.kind == "alias" else None

    def _add_calls(self, route: Route, settings: Any) -> None:
        if settings is None or route.cache is None:  # the config requires a cache with it
            return
        policy = ReattachPolicy(
            ttl=settings.ttl,
            detached_grace=settings.detached_grace,
            max_calls=settings.max_calls,
            max_buffered_bytes=settings.max_buffered_bytes,
        )
        self._calls[route.name] = CallRegistry(route.name, route.cache, policy, self._clock)

    def targets(self) -> list[TargetInfo]:
        """Every alias and service, for ListModels (aliases first, each sorted by name)."""
        found = [
            TargetInfo(
                target=name,
                kind="alias",
                deployments=tuple(d.name for d in self._routes[name].deployments),
                default=name == self._default,
                response_cache=self._routes[name].cache is not None,
            )
            for name in sorted(self._aliases)
        ]
        for name in sorted(self._services):
            settings: ModelService = self._services[name].backend
            models = dict.fromkeys((settings.model, *settings.models))
            found.append(
                TargetInfo(
                    target=name,
                    kind="service",
                    deployments=tuple(f"{name}/{model}" for model in models),
                    provider=settings.provider.provider,
                    default=name == self._default,
                )
            )
        return found

    def configured_models(self) -> dict[str, tuple[ModelService, frozenset[str]]]:
        """Each `ai_model` service, with the models the config names on it (its default, its
        `models:` list and the aliases' deployments of it)."""
        named: dict[str, set[str]] = {name: set() for name in self._services}
        for service_name, model in list(self._deployments):
            named[service_name].add(model)
        found = {}
        for name, service in self._services.items():
            settings: ModelService = service.backend
            found[name] = (settings, frozenset({settings.model, *settings.models, *named[name]}))
        return found

    def observe(self, listener_for: Callable[[Deployment], EventListener]) -> None:
        """Listen to the pipeline events (lifecycle included) of every deployment, those
        built so far and those built later: `listener_for(deployment)` makes its listener."""
        self._observers.append(listener_for)
        for deployment in list(self._deployments.values()):
            deployment.add_listener(listener_for(deployment))

    def breaker_states(self) -> list[tuple[str, str, str, CircuitState]]:
        """(deployment, provider, model, state) of every deployment with a breaker."""
        return [
            (d.name, d.provider_name, d.model, d.breaker.state)
            for d in list(self._deployments.values())
            if d.breaker is not None
        ]

    def _deployment(self, service_name: str, model: str) -> Deployment:
        key = (service_name, model)
        deployment = self._deployments.get(key)
        if deployment is None:
            service = self._services[service_name]
            deployment = Deployment(service_name, model, service.backend, self._clock)
            for listener_for in self._observers:
                deployment.add_listener(listener_for(deployment))
            self._deployments[key] = deployment
        return deployment

    def _single(
        self, name: str, kind: Any, service: str, model: str, retry: RetryOptions | None
    ) -> Route:
        return Route(
            name=name,
            kind=kind,
            deployments=(self._deployment(service, model),),
            retry=retry,
            budget=RetryBudget(retry, self._clock) if retry is not None else None,
            clock=self._clock,
            random=self._random,
        )

    def _alias_route(self, name: str, alias: AliasService, caches: dict[str, Any]) -> Route:
        deployments = []
        for index, ref in enumerate(alias.deployments):
            service = self._services.get(ref.service)
            if service is None:
                raise AIConfigError(
                    f"services.{name}.deployments[{index}].service: no ai_model service "
                    f"named {ref.service!r}"
                )
            model = ref.model or service.backend.model
            try:
                service.backend.provider.check_model(model)
            except InvalidArgument as exc:
                raise AIConfigError(f"services.{name}.deployments[{index}].model: {exc}") from exc
            deployments.append(self._deployment(ref.service, model))
        cache = None
        if alias.cache_target is not None:
            integration = caches.get(alias.cache_target)
            if integration is None:
                raise AIConfigError(
                    f"services.{name}.cache.target: no cache service named {alias.cache_target!r}"
                )
            cache = ResponseCache(name, integration, alias.cache_ttl)
        retry = alias.retry
        # Hedges are paid from the retry budget: a hedging alias has one even without
        # retries (the default budget settings).
        budgeted = retry if retry is not None or alias.hedge is None else RetryOptions()
        return Route(
            name=name,
            kind="alias",
            deployments=tuple(deployments),
            retry=retry,
            cache=cache,
            budget=RetryBudget(budgeted, self._clock) if budgeted is not None else None,
            clock=self._clock,
            random=self._random,
            hedge=alias.hedge,
            limits=alias.budgets(name, self._clock),
        )

    def _check_model(self, service_name: str, settings: ModelService, model: str) -> None:
        """Allow a `service/model` target: a name the provider can send, and a listed model
        or a bounded number of others."""
        if len(model) > MAX_MODEL_NAME:
            raise InvalidArgument(
                f"target: a model name has at most {MAX_MODEL_NAME} characters",
                reason="INVALID_REQUEST",
                metadata={"field": "target"},
            )
        settings.provider.check_model(model)
        if settings.models:
            if model not in settings.models and model != settings.model:
                raise InvalidArgument(
                    f"target: service {service_name!r} does not list model {model!r}",
                    reason="INVALID_REQUEST",
                    metadata={"field": "target"},
                )
            return
        if (service_name, model) in self._deployments:
            return
        count = self._adhoc.get(service_name, 0)
        if count >= _MAX_ADHOC_MODELS:
            raise InvalidArgument(
                f"target: service {service_name!r} already serves {count} unlisted models; "
                "list the models it may serve under `models:`",
                reason="INVALID_REQUEST",
                metadata={"field": "target"},
            )
        self._adhoc[service_name] = count + 1

    @staticmethod
    def _unknown(target: str) -> NotFound:
        return NotFound(
            f"no AI alias, ai_model service or deployment named {target!r} is configured",
            reason="TARGET_NOT_FOUND",
            metadata={"target": target, "type": "ai"},
        )
