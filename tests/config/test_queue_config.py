"""The `type: queue` settings: each backend's own settings, what SQS requires, and the pairs
that go together, refused at load with the path and the reason."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, QueueServiceConfig, parse_config

AWS = "connections:\n  aws: {type: aws, region: eu-west-1}\n"


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return str(caught.value)


def test_an_sqs_queue_loads_by_name_or_url_with_its_connection() -> None:
    for queue in ("orders", "orders.fifo", "https://sqs.eu-west-1.amazonaws.com/123456789012/o"):
        service = f"{{type: queue, backend: sqs, connection: aws, queue: '{queue}'}}"
        config = parse_config(f"{AWS}services:\n  q: {service}\n", environ={})
        loaded = config.services["q"]
        assert isinstance(loaded, QueueServiceConfig) and loaded.queue == queue
        assert config.connection_of("q") == "aws"


def test_the_backend_is_inferred_from_an_aws_connection() -> None:
    config = parse_config(
        f"{AWS}services:\n  q: {{type: queue, connection: aws, queue: orders}}\n", environ={}
    )
    assert config.services["q"].backend == "sqs"


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("{type: queue, backend: sqs, queue: orders}", "backend: sqs needs connection"),
        ("{type: queue, backend: sqs, connection: aws}", "needs queue"),
        ("{type: queue, backend: sqs, connection: aws, queue: o, fifo: true}", "fifo is only"),
        ("{type: queue, queue: orders}", "queue is only for backend: sqs"),
        ("{type: queue, backend: sqs, connection: aws, queue: 'a b'}", "neither an SQS queue"),
        ("{type: queue, max_receive_count: 3}", "go together"),
        ("{type: queue, dead_letter: dlq}", "go together"),
        ("{type: queue, content_based_deduplication: true}", "fifo queues only"),
        ("{type: queue, visibility_timeout: 13h}", "visibility_timeout"),
        ("{type: queue, max_messages: 0}", "max_messages"),
        ("{type: queue, message_retention: 15d}", "message_retention"),
        ("{type: queue, timeouts: {request: 10s}}", "must exceed 20s"),
    ],
)
def test_bad_queue_settings_are_refused_at_load(service: str, expected: str) -> None:
    message = _error(f"{AWS}services:\n  q: {service}\n")
    assert "services.q" in message and expected in message


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (
            "  jobs: {type: queue, max_receive_count: 3, dead_letter: cache}\n"
            "  cache: {type: cache}\n",
            "'cache' is not a configured queue service",
        ),
        (
            "  jobs: {type: queue, max_receive_count: 3, dead_letter: nowhere}\n",
            "'nowhere' is not a configured queue service",
        ),
        ("  jobs: {type: queue, max_receive_count: 3, dead_letter: jobs}\n", "this queue itself"),
        (
            "  jobs: {type: queue, fifo: true, max_receive_count: 3, dead_letter: dlq}\n"
            "  dlq: {type: queue}\n",
            "FIFO queue exactly when",
        ),
        (
            "  jobs: {type: queue, max_receive_count: 3, dead_letter: dlq}\n"
            "  dlq: {type: queue, backend: sqs, connection: aws, queue: dlq}\n",
            "'dlq' is not a configured queue service with backend: memory",
        ),
    ],
)
def test_a_dead_letter_must_name_another_memory_queue_of_the_same_kind(
    services: str, expected: str
) -> None:
    message = _error(f"{AWS}services:\n{services}")
    assert "services.jobs.dead_letter" in message and expected in message


def test_a_dead_letter_naming_a_memory_queue_of_the_same_kind_loads() -> None:
    config = parse_config(
        "services:\n  jobs: {type: queue, max_receive_count: 3, dead_letter: dlq}\n"
        "  dlq: {type: queue}\n",
        environ={},
    )
    assert config.services["jobs"].dead_letter == "dlq"  # type: ignore[union-attr]
