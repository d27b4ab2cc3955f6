"""Resource alarms seen by real clients: publishers are told connection.blocked and paused,
consumers keep consuming, and connection.unblocked follows when the alarm clears; the
publishes made meanwhile arrive afterwards, none lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pamqp import commands

from leveret import Broker
from tests.rawamqp import RawClient


async def _check(broker: Broker) -> None:
    assert broker.monitor is not None
    broker.monitor.check()


def set_limits(broker: Broker, *, disk: int | None = None, memory: int | None = None) -> None:
    assert broker.monitor is not None
    if disk is not None:
        broker.monitor.disk_free_limit = disk
    if memory is not None:
        broker.monitor.memory_limit = memory
    broker.call(_check(broker))


def pump(conn: pika.BlockingConnection, until: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:  # type: ignore[operator]
        conn.process_data_events(time_limit=0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(data_dir=tmp_path / "data") as running:
        yield running


def count(broker: Broker, queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


@pytest.mark.parametrize("alarm", ["disk", "memory"])
def test_publishers_block_and_consumers_drain(broker: Broker, alarm: str) -> None:
    publisher = pika.BlockingConnection(pika.URLParameters(broker.url))
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(
        lambda _conn, frame: events.append(f"blocked: {frame.method.reason}"))
    publisher.add_on_connection_unblocked_callback(lambda _conn, _frame: events.append("ok"))
    pub = publisher.channel()
    pub.queue_declare("work", durable=True)
    for i in range(5):
        pub.basic_publish("", "work", b"before %d" % i)
    consumer = pika.BlockingConnection(pika.URLParameters(broker.url))
    if alarm == "disk":
        set_limits(broker, disk=2**62)
    else:
        set_limits(broker, memory=1)
    pump(publisher, lambda: events)
    assert len(events) == 1 and events[0].startswith(f"blocked: {alarm}:")
    pub.basic_publish("", "work", b"during the alarm")
    publisher.process_data_events(time_limit=0.3)
    assert count(broker, "work") == 5  # the publish waits in the socket
    got = [body for _, _, body in iter(lambda: consumer.channel().basic_get("work", True),
                                       (None, None, None))]
    assert got == [b"before %d" % i for i in range(5)]  # consumers are not blocked
    set_limits(broker, disk=0, memory=2**62)
    pump(publisher, lambda: len(events) == 2)
    assert events[1] == "ok"
    pump(consumer, lambda: count(broker, "work") == 1)
    assert consumer.channel().basic_get("work", auto_ack=True)[2] == b"during the alarm"
    publisher.close()
    consumer.close()


def test_a_connection_opened_during_an_alarm_is_blocked(broker: Broker) -> None:
    set_limits(broker, disk=2**62)
    with RawClient("127.0.0.1", broker.port or 0) as client:
        client.handshake(capabilities={"connection.blocked": True})
        assert client.expect(commands.Connection.Blocked).reason.startswith("disk:")
        set_limits(broker, disk=0)
        client.expect(commands.Connection.Unblocked)


async def test_the_monitor_runs_by_itself(tmp_path: Path) -> None:
    async with Broker(data_dir=tmp_path / "data") as broker:
        assert broker.monitor is not None
        broker.monitor.memory_limit = 1
        await asyncio.sleep(1.5)  # the next periodic check raises the alarm
        assert broker.monitor.alarms and next(iter(broker.monitor.alarms)).startswith("memory")
