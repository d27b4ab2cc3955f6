"""A pytest plugin: an embedded broker for your own test suite, no Docker needed.

Installed with Leveret (entry point ``pytest11``), it gives every test suite two fixtures:

* ``leveret_broker``: one `leveret.Broker` per test session, on a free port, on its own thread.
* ``leveret_url``: an ``amqp://`` URL for a vhost of its own, made for each test and deleted
  after it, so tests never see each other's queues.

    def test_publish(leveret_url):
        with pika.BlockingConnection(pika.URLParameters(leveret_url)) as conn:
            ...
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from leveret.broker import Broker

_vhost_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def leveret_broker() -> Iterator[Broker]:
    """A broker on 127.0.0.1 and a free port, for the whole test session."""
    with Broker(port=0) as broker:
        yield broker


@pytest.fixture
def leveret_url(leveret_broker: Broker, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh vhost on the session's broker, deleted after the test."""
    name = f"test-{next(_vhost_numbers)}-{request.node.name}"[:200]
    leveret_broker.add_vhost(name)
    yield leveret_broker.url_for(name)
    leveret_broker.delete_vhost(name)
