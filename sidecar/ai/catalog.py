"""The models each upstream lists, merged into ListModels (the specification's
loadModelCapabilities): configured targets first, then every model an OpenAI-compatible
upstream lists at `/models` that no configured target already names.

Each upstream's list is cached for `ttl` seconds (on the router's clock), so ListModels does
not hit every upstream per call. An upstream that cannot list (down, 404, no list API) is
left out of the answer (or keeps its last good list) and is not asked again for
`_RETRY_FAILED` seconds, so a hanging upstream slows ListModels once per period, not every
call; ListModels never fails for it.

At start-up `warn_unlisted` compares the configured models with the lists once and logs a
warning for each configured model its upstream does not list (a typo, a retired model),
without delaying start-up: it runs as a background task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, runtime_checkable

from sidecar.ai.router import AIRouter, TargetInfo
from sidecar.errors import SidecarError
from sidecar.resilience import Clock

__all__ = ["DEFAULT_TTL", "ModelCatalog"]

_log = logging.getLogger("sidecar.ai")

DEFAULT_TTL: Final = 300.0
"""Seconds an upstream's model list is reused."""
_RETRY_FAILED: Final = 30.0
"""Seconds before an upstream that could not list its models is asked again."""


@runtime_checkable
class _ModelLister(Protocol):
    """A provider that can list its upstream's models (OpenAI and compatible APIs)."""

    provider: str

    async def list_models(self) -> list[str]: ...


class ModelCatalog:
    """The configured targets plus the upstreams' models, cached per upstream.

    Args:
        router: The configured targets and services.
        clock: Time for the cache.
        ttl: Seconds an upstream's list is reused.
    """

    def __init__(self, router: AIRouter, clock: Clock, ttl: float = DEFAULT_TTL) -> None:
        self._router = router
        self._clock = clock
        self._ttl = ttl
        self._lists: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._failed: dict[str, float] = {}
        """When each upstream that could not list may be asked again."""
        self._lock = asyncio.Lock()

    async def targets(self) -> list[TargetInfo]:
        """The configured targets, then each upstream's models not already among them
        (as `service/model`, sorted)."""
        found = self._router.targets()
        named = {info.target for info in found}
        named.update(d for info in found for d in info.deployments)
        for service, (provider, models) in sorted((await self._upstream_lists()).items()):
            for model in sorted(models):
                target = f"{service}/{model}"
                if target not in named:
                    found.append(
                        TargetInfo(
                            target=target,
                            kind="upstream",
                            deployments=(target,),
                            provider=provider,
                        )
                    )
        return found

    async def warn_unlisted(self) -> None:
        """Log a warning for each configured model its upstream does not list."""
        lists = await self._upstream_lists()
        for service, (settings, models) in sorted(self._router.configured_models().items()):
            if service not in lists:
                continue
            listed = set(lists[service][1])
            for model in sorted(models - listed):
                _log.warning(
                    "configured AI model is not listed by its upstream",
                    extra={
                        "service": service,
                        "model": model,
                        "provider": settings.provider.provider,
                    },
                )

    async def _upstream_lists(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """(provider, model ids) of every upstream that lists models and answered, now or
        within the TTL."""
        listers = {
            name: settings.provider
            for name, (settings, _) in self._router.configured_models().items()
            if isinstance(settings.provider, _ModelLister)
        }
        async with self._lock:  # one refresh at a time: concurrent calls share its result
            now = self._clock.monotonic()
            stale = [
                name
                for name in listers
                if self._lists.get(name, (-1.0, ()))[0] <= now
                and self._failed.get(name, -1.0) <= now
            ]
            # One after the other: upstreams sharing a connection reuse one keep-alive
            # socket, and there are few upstreams to ask.
            for name in stale:
                try:
                    models = await listers[name].list_models()
                except SidecarError as exc:
                    _log.info(
                        "AI upstream did not list its models",
                        extra={"service": name, "reason": exc.reason},
                    )
                    self._failed[name] = now + _RETRY_FAILED
                    continue
                self._failed.pop(name, None)
                self._lists[name] = (now + self._ttl, tuple(models))
        return {
            name: (provider.provider, self._lists[name][1])
            for name, provider in listers.items()
            if name in self._lists
        }
