"""Durability through the front door: what survives a restart of a broker with a data
directory, and what a client is told only once it is on disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pamqp import commands

from leveret import Broker
from leveret.store.disk import DiskEngine
from tests.pikautil import drain
from tests.rawamqp import RawClient

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def connect(broker: Broker, vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url_for(vhost)))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_definitions_survive_a_restart(data_dir: Path) -> None:
    with Broker(data_dir=data_dir) as broker:
        broker.add_vhost("jobs")
        with connect(broker) as conn:
            ch = conn.channel()
            ch.exchange_declare("ae", "fanout", durable=True)
            ch.exchange_declare("events", "topic", durable=True,
                                arguments={"alternate-exchange": "ae"})
            ch.exchange_declare("scratch", "fanout")  # transient: gone after the restart
            ch.exchange_declare("fan", "fanout", durable=True)
            ch.exchange_bind("fan", "events", "audit.#")
            ch.queue_declare("orders", durable=True, arguments={"x-max-priority": 5,
                                                                "x-list": [1, "two", True]})
            ch.queue_declare("audit", durable=True)
            ch.queue_declare("unrouted", durable=True)
            ch.queue_declare("temp")  # transient
            ch.queue_bind("orders", "events", "order.*")
            ch.queue_bind("audit", "fan")
            ch.queue_bind("unrouted", "ae")
            ch.queue_bind("temp", "events", "#")
        with connect(broker, "jobs") as conn:
            conn.channel().queue_declare("in-jobs", durable=True)
    with Broker(data_dir=data_dir) as broker:
        with connect(broker) as conn:
            ch = conn.channel()
            ch.queue_declare("orders", durable=True, arguments={"x-max-priority": 5,
                                                                "x-list": [1, "two", True]})
            ch.basic_publish("events", "order.created", b"o", PERSISTENT)
            ch.basic_publish("events", "audit.login", b"a", PERSISTENT)
            ch.basic_publish("events", "nothing.bound", b"u", PERSISTENT)
            assert drain(ch, "orders") == [b"o"]
            assert drain(ch, "audit") == [b"a"]
            assert drain(ch, "unrouted") == [b"u"]
            for missing in ("temp", "scratch"):
                with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="404"):
                    declare = conn.channel().queue_declare if missing == "temp" else \
                        conn.channel().exchange_declare
                    declare(missing, passive=True)
        with connect(broker, "jobs") as conn:
            conn.channel().queue_declare("in-jobs", passive=True)


def test_persistent_messages_survive_and_transient_ones_do_not(data_dir: Path) -> None:
    with Broker(data_dir=data_dir) as broker, connect(broker) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("work", durable=True)
        ch.queue_declare("scratch")
        for i in range(500):
            ch.basic_publish("", "work", b"p%d" % i, PERSISTENT)
            ch.basic_publish("", "work", b"t%d" % i)
        ch.basic_publish("", "scratch", b"x", PERSISTENT)
        held = ch.basic_get("work")[0]
        assert held is not None
    with Broker(data_dir=data_dir) as broker, connect(broker) as conn:
        ch = conn.channel()
        method, _, body = ch.basic_get("work", auto_ack=True)
        assert (body, method.redelivered) == (b"p0", True)  # delivered before the restart
        assert drain(ch, "work") == [b"p%d" % i for i in range(1, 500)]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="404"):
            ch.queue_declare("scratch", passive=True)


@pytest.fixture
def stalled_disk(data_dir: Path) -> Iterator[tuple[Broker, threading.Event]]:
    """A broker whose I/O thread is busy until the test sets the event: nothing commits."""
    with Broker(data_dir=data_dir) as broker:
        assert isinstance(broker.store, DiskEngine)
        release = threading.Event()
        broker.store._io.submit(release.wait)  # occupy the one I/O thread
        try:
            yield broker, release
        finally:
            release.set()


def test_a_confirm_waits_for_the_disk(stalled_disk: tuple[Broker, threading.Event]) -> None:
    broker, release = stalled_disk
    with RawClient("127.0.0.1", broker.port or 0) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="transient-q"))
        client.expect(commands.Queue.DeclareOk)  # not durable: answered at once
        client.send(1, commands.Confirm.Select())
        client.expect(commands.Confirm.SelectOk)
        client.publish(1, "", "transient-q", b"t", commands.Basic.Properties(delivery_mode=2))
        assert client.expect(commands.Basic.Ack).delivery_tag == 1  # nothing durable: at once
        client.send(1, commands.Queue.Declare(queue="durable-q", durable=True))
        with pytest.raises(TimeoutError):  # declare-ok promises durability: it waits
            client.recv(timeout=0.5)
        release.set()
        client.expect(commands.Queue.DeclareOk)
        broker.store._io.submit(time.sleep, 0.5)
        client.publish(1, "", "durable-q", b"p", commands.Basic.Properties(delivery_mode=2))
        started = time.monotonic()
        assert client.expect(commands.Basic.Ack).delivery_tag == 2
        assert time.monotonic() - started > 0.3  # it waited for the commit behind the sleep


def test_commit_ok_waits_for_the_disk(stalled_disk: tuple[Broker, threading.Event]) -> None:
    broker, release = stalled_disk
    with RawClient("127.0.0.1", broker.port or 0) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Tx.Select())
        client.expect(commands.Tx.SelectOk)
        client.send(1, commands.Queue.Declare(queue="tx-q", durable=True, nowait=True))
        client.publish(1, "", "tx-q", b"p", commands.Basic.Properties(delivery_mode=2))
        client.send(1, commands.Tx.Commit())
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.5)
        release.set()
        client.expect(commands.Tx.CommitOk)


def test_a_second_broker_cannot_take_the_data_directory(data_dir: Path) -> None:
    other = Broker(data_dir=data_dir)
    with other, pytest.raises(Exception, match="in use by another broker"):
        Broker(data_dir=data_dir).__enter__()
