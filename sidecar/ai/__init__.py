"""AI routing: model aliases over deployments, fallback, budgets, breakers, response cache.

Neither a backend nor a servicer: it sits between them. `AIRouter` resolves a request's
target to a `Route` (ordered `Deployment`s plus retry, budget and cache); `stream_chat` and
`embed` run one call over a route. Providers (`sidecar.backends.ai`) know nothing of
routes; the servicer (`sidecar.servicers.ai`) knows nothing of fallback.

    services.py         the backend objects of `ai_model` and `ai_alias` services
    pipelines.py        the streaming pipelines of a service's deployments, refusals
    deployment.py       one model on one service, and the admission of one attempt
    router.py           target -> route
    limits.py           every size a caller controls, bounded (INVALID_ARGUMENT above)
    fallback.py         deployments in order, commit on the first chunk, hedging, cache
    hedge.py            when an alias hedges a slow first chunk
    unary.py            the same for embeddings
    relay.py            stream batches to a slower writer, merging what piles up
    rounds.py           retry rounds after every deployment failed
    tokens.py           token estimates for budgets, and the count of a streamed answer
    response_cache.py   deterministic answers on a cache service
"""

from sidecar.ai.deployment import Admission, Deployment
from sidecar.ai.fallback import RoutedCall, stream_chat
from sidecar.ai.route import Route
from sidecar.ai.router import AIConfigError, AIRouter, TargetInfo
from sidecar.ai.services import (
    AliasService,
    DeploymentRef,
    ModelDefaults,
    ModelService,
    TokenLimits,
)
from sidecar.ai.unary import embed

__all__ = [
    "AIConfigError",
    "AIRouter",
    "Admission",
    "AliasService",
    "Deployment",
    "DeploymentRef",
    "ModelDefaults",
    "ModelService",
    "Route",
    "RoutedCall",
    "TargetInfo",
    "TokenLimits",
    "embed",
    "stream_chat",
]
