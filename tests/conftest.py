"""Shared fixtures: a real broker on a free port for each test, and the RabbitMQ reference.

Integration tests talk to the broker over TCP with real clients; nothing is mocked.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from leveret import Broker

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh broker on its own thread (for synchronous clients such as pika and kombu)."""
    with Broker(port=0) as running:
        yield running


@pytest.fixture
def broker_url(broker: Broker) -> str:
    return broker.url


@pytest.fixture
async def async_broker() -> AsyncIterator[Broker]:
    """A fresh broker in the test's own event loop (for aio-pika)."""
    async with Broker(port=0) as running:
        yield running


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The reference RabbitMQ on 127.0.0.1:5672; a test that needs it fails if it is down."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as err:
        pytest.fail(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({err}); parity tests need it")
    return RABBITMQ_URL
