"""Parity fixtures: run a scenario on RabbitMQ and on Leveret, compare what pika observed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from leveret import Broker

Observation = Any
Scenario = Callable[[str, str], Observation]


@pytest.fixture
def prefix() -> str:
    return f"parity-{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def compare(broker: Broker, rabbitmq_url: str, prefix: str) -> Iterator[Callable[[Scenario],
                                                                             None]]:
    """Run a scenario on both servers and assert the observations are equal."""

    def run(scenario: Scenario) -> None:
        reference = scenario(rabbitmq_url, prefix)
        ours = scenario(broker.url, prefix)
        assert ours == reference

    yield run
    _clean_rabbitmq(rabbitmq_url, prefix)


def _clean_rabbitmq(url: str, prefix: str) -> None:
    """Delete every queue and exchange named with ``prefix`` (RabbitMQ has no wildcard delete)."""
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        for kind in ("queue", "exchange"):
            for suffix in _CREATED:
                ch = conn.channel()
                try:
                    if kind == "queue":
                        ch.queue_delete(prefix + suffix)
                    else:
                        ch.exchange_delete(prefix + suffix)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
                if ch.is_open:
                    ch.close()


# Every name suffix a scenario may create, for cleanup.
_CREATED = ["q", "q2", "q3", "x", "x2", "ae", "int", "t", "h", "f", "d", "busy", "full",
            "ttl", "excl", "dur", "solo", "a", "b", "c", "all", "any", "hx"]


