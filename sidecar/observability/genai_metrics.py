"""Metrics of AI calls, named after the OpenTelemetry GenAI semantic conventions.

Per upstream attempt, with the GenAI attributes `gen_ai.operation.name` (chat,
embeddings), `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, plus
`deployment` (`service/model`) and `error.type` (the error reason) on failures:

| metric | kind | unit |
|---|---|---|
| `gen_ai.client.operation.duration` | histogram | s |
| `gen_ai.client.operation.time_to_first_chunk` | histogram (streams) | s |
| `gen_ai.client.token.usage` | histogram, `gen_ai.token.type` input or output | {token} |

The conventions name no request counter, cache or breaker metric, so these follow the
sidecar's own `integration_*` naming:

- `integration_ai_requests_total` (counter): deployment, provider, model, operation and
  `outcome` (OK or the error reason), one per attempt or refusal;
- `integration_ai_response_cache_total` (counter): `alias`, `result` (hit or miss);
- `integration_ai_circuit_breaker_state` (gauge; 0 closed, 1 open, 2 half-open,
  3 isolated): deployment, provider, model.

Attempts and refusals are not recorded by the calling code: they arrive as events of each
deployment's `StreamingPipeline` (`listener(deployment)`). A "settled" event is one attempt
(its duration and time to first chunk measured by the pipeline, on its clock); a rejection
("circuit_open", "rate_limited", ...) is one refusal, counted under the reason the caller
got. Both carry a `GenAIAttempt` as their detail: the operation, and for a settled attempt
its outcome, token usage and response model.

Attribute dicts are built once per label set: an AI call records a handful of points, and
each `record` with a fresh dict costs several microseconds more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.resilience import CircuitState, EventListener, ResilienceEvent

__all__ = ["BreakerStates", "GenAIAttempt", "GenAIMetrics", "MeteredDeployment"]

_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_FIRST_CHUNK_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_STATES: Final = {
    CircuitState.CLOSED: 0,
    CircuitState.OPEN: 1,
    CircuitState.HALF_OPEN: 2,
    CircuitState.ISOLATED: 3,
}
_MAX_LABEL_SETS: Final = 4096
_REFUSALS: Final = frozenset(
    {"cooling_down", "over_capacity", "circuit_open", "bulkhead_full", "rate_limited"}
)
"""The pipeline events that refuse a call before any request is sent."""


class TokenUsage(Protocol):
    """The tokens of one call, as a provider's `Usage` carries them (metrics sit below the
    backends, so they name only what they read)."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GenAIAttempt:
    """What the GenAI metrics need to know about one attempt, attached to its pipeline
    events as their `detail`.

    Attributes:
        operation: `gen_ai.operation.name`: chat or embeddings.
        outcome: OK, or the reason of the error the attempt ended with (CANCELLED when the
            caller went away).
        usage: The tokens the upstream reported, if it did.
        response_model: The model that answered, as the upstream named it.
    """

    operation: str
    outcome: str = "OK"
    usage: TokenUsage | None = None
    response_model: str = ""


class MeteredDeployment(Protocol):
    """What the metrics read from a deployment."""

    @property
    def name(self) -> str:
        """`service/model`."""
        ...

    @property
    def model(self) -> str:
        """The upstream model."""
        ...

    @property
    def provider_name(self) -> str:
        """openai, anthropic, huggingface or echo."""
        ...


class _Labels:
    __slots__ = ("base", "counter", "input", "output")

    def __init__(
        self,
        operation: str,
        deployment: str,
        provider: str,
        model: str,
        outcome: str,
        response_model: str,
    ) -> None:
        base: dict[str, str] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "deployment": deployment,
        }
        if response_model:
            base["gen_ai.response.model"] = response_model
        if outcome != "OK":
            base["error.type"] = outcome
        self.base: Mapping[str, str] = base
        self.input: Mapping[str, str] = {**base, "gen_ai.token.type": "input"}
        self.output: Mapping[str, str] = {**base, "gen_ai.token.type": "output"}
        self.counter: Mapping[str, str] = {
            "deployment": deployment,
            "provider": provider,
            "model": model,
            "operation": operation,
            "outcome": outcome,
        }


BreakerStates = Callable[[], Iterable[tuple[str, str, str, CircuitState]]]
"""(deployment, provider, model, breaker state) of every deployment with a breaker."""


class GenAIMetrics:
    """Records AI attempts; one instance per server, shared by every route.

    Args:
        meter: The server's meter.
        breaker_states: Reports every deployment's breaker for the state gauge.
    """

    def __init__(self, meter: Meter, breaker_states: BreakerStates | None = None) -> None:
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to the first chunk of a streamed GenAI answer",
            explicit_bucket_boundaries_advisory=_FIRST_CHUNK_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per GenAI operation",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._requests = meter.create_counter(
            "integration_ai_requests_total",
            unit="1",
            description="Attempts on AI deployments, by outcome (OK or the error reason)",
        )
        self._cache = meter.create_counter(
            "integration_ai_response_cache_total",
            unit="1",
            description="Response cache lookups of AI aliases, by result (hit or miss)",
        )
        self._breaker_states = breaker_states
        if breaker_states is not None:
            meter.create_observable_gauge(
                "integration_ai_circuit_breaker_state",
                callbacks=[self._observe_breakers],
                description="Deployment circuit breaker: 0 closed, 1 open, 2 half-open, 3 isolated",
            )
        self._labels: dict[tuple[str, ...], _Labels] = {}
        self._cache_labels: dict[tuple[str, bool], Mapping[str, str]] = {}

    def _labels_for(
        self, operation: str, deployment: MeteredDeployment, outcome: str, response_model: str
    ) -> _Labels:
        key = (operation, deployment.name, outcome, response_model)
        labels = self._labels.get(key)
        if labels is None:
            if len(self._labels) >= _MAX_LABEL_SETS:
                self._labels.clear()
            labels = _Labels(
                operation,
                deployment.name,
                deployment.provider_name,
                deployment.model,
                outcome,
                response_model,
            )
            self._labels[key] = labels
        return labels

    def listener(self, deployment: MeteredDeployment) -> EventListener:
        """A listener for the events of `deployment`'s pipeline (it needs the lifecycle
        ones): each "settled" records an attempt, each rejection a refusal. Events without
        a `GenAIAttempt` detail are not about an AI call and are skipped."""

        def on_event(event: ResilienceEvent) -> None:
            detail = event.detail
            if not isinstance(detail, GenAIAttempt):
                return
            if event.event == "settled":
                self.record_attempt(
                    detail.operation,
                    deployment,
                    detail.outcome,
                    event.elapsed or 0.0,
                    event.first_chunk,
                    detail.usage,
                    detail.response_model,
                )
            elif event.event in _REFUSALS and event.outcome is not None:
                self.record_refusal(detail.operation, deployment, event.outcome)

        return on_event

    def record_attempt(
        self,
        operation: str,
        deployment: MeteredDeployment,
        outcome: str,
        duration: float,
        first_chunk: float | None = None,
        usage: TokenUsage | None = None,
        response_model: str = "",
    ) -> None:
        """One attempt on a deployment ended after `duration` seconds, its first chunk
        `first_chunk` seconds after it started (None: no chunk, or not a stream)."""
        labels = self._labels_for(operation, deployment, outcome, response_model)
        self._requests.add(1, labels.counter)
        self._duration.record(duration, labels.base)
        if first_chunk is not None:
            self._first_chunk.record(first_chunk, labels.base)
        if usage is not None:
            self._tokens.record(usage.input_tokens, labels.input)
            self._tokens.record(usage.output_tokens, labels.output)

    def record_refusal(self, operation: str, deployment: MeteredDeployment, reason: str) -> None:
        """A deployment refused an attempt before any request was sent."""
        self._requests.add(1, self._labels_for(operation, deployment, reason, "").counter)

    def record_cache(self, alias: str, hit: bool) -> None:
        """One response-cache lookup."""
        key = (alias, hit)
        labels = self._cache_labels.get(key)
        if labels is None:
            labels = self._cache_labels[key] = {"alias": alias, "result": "hit" if hit else "miss"}
        self._cache.add(1, labels)

    def _observe_breakers(self, _options: CallbackOptions) -> Iterable[Observation]:
        assert self._breaker_states is not None
        for deployment, provider, model, state in self._breaker_states():
            yield Observation(
                _STATES[state], {"deployment": deployment, "provider": provider, "model": model}
            )
