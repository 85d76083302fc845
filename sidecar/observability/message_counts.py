"""Pub/sub message counts by integration and event, counted where messages meet callers
(the PubSubService servicer) and read by the metrics layer at export time:
`integration_pubsub_messages_total{service, event}`.

Events: "delivered" (a message written to a Subscribe stream), "redelivered" (one of those
that had been delivered before: a reliable message past its first delivery), "acknowledged"
(ids an Acknowledge call settled) and "dropped" (messages a slow subscriber lost, as its
stream reports). Moves to a dead-letter log happen inside the backends, out of the
servicer's sight: "dead_lettered" comes from the backends' own totals, read through a
source (`add_source`) at export time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

__all__ = ["EVENTS", "MessageCounts"]

EVENTS = ("delivered", "redelivered", "acknowledged", "dead_lettered", "dropped")


class MessageCounts:
    """Plain-int counters: a dict increment per message (an SDK counter's `add` costs
    ~7 µs, a stream delivering thousands of messages a second would feel it)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._sources: list[Callable[[], Iterable[tuple[str, str, int]]]] = []

    def add_source(self, source: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Also report the (service, event, count) triples `source` gives when read: counts
        kept elsewhere, such as a backend's dead letters."""
        self._sources.append(source)

    def add(self, service: str, event: str, count: int = 1) -> None:
        """Count `count` messages of `event` on `service` (label sets: configured
        integrations x the five events)."""
        key = (service, event)
        self._counts[key] = self._counts.get(key, 0) + count

    def __iter__(self) -> Iterator[tuple[str, str, int]]:
        """(service, event, count) of every pair counted so far."""
        for (service, event), count in list(self._counts.items()):
            yield service, event, count
        for source in self._sources:
            yield from source()
