"""kombu over its default py-amqp transport against the real broker on its own thread.

Proves that what Celery is built on works unchanged: Producer/Consumer and SimpleQueue round
trips with the JSON serializer, FIFO order over many messages, drain_events timing out when
idle, per-consumer prefetch, ack/reject/requeue as kombu exposes them, both of py-amqp's
password mechanisms (PLAIN, kombu's default, and AMQPLAIN), and the leveret pytest plugin's
per-test vhost URL.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import MessageStateError
from kombu.message import Message

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0


@pytest.fixture
def conn(broker_url: str) -> Iterator[Connection]:
    with Connection(broker_url, connect_timeout=5) as connection:
        connection.connect()
        yield connection


Received = list[tuple[Any, Message]]


def collect(received: Received) -> Any:
    def on_message(body: Any, message: Message) -> None:
        received.append((body, message))
    return on_message


def drain_until(conn: Connection, received: Received, count: int,
                timeout: float = WAIT) -> Received:
    deadline = time.monotonic() + timeout
    while len(received) < count:
        conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
    return received


def drain_idle(conn: Connection, idle: float = 0.3) -> None:
    """Process events until none has arrived for ``idle`` seconds."""
    while True:
        try:
            conn.drain_events(timeout=idle)
        except TimeoutError:
            return


def queue_depth(conn: Connection, name: str) -> int:
    _, messages, _ = conn.default_channel.queue_declare(name, passive=True)
    return int(messages)


def test_producer_consumer_round_trip_with_json(conn: Connection) -> None:
    exchange = Exchange("tasks", type="direct", durable=True)
    queue = Queue("tasks.default", exchange, routing_key="default", durable=True)
    producer = Producer(conn.channel(), exchange=exchange, serializer="json")
    producer.publish({"task": "resize", "args": [640, 480], "ratio": 1.5, "ok": True,
                      "name": "héllo"},
                     routing_key="default", declare=[queue], headers={"attempt": 1},
                     correlation_id="c-1", reply_to="replies", delivery_mode=2, priority=5)

    received: Received = []
    with Consumer(conn.channel(), queues=[queue], callbacks=[collect(received)],
                  accept=["json"]):
        drain_until(conn, received, 1)
    body, message = received[0]
    assert body == {"task": "resize", "args": [640, 480], "ratio": 1.5, "ok": True,
                    "name": "héllo"}
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.headers == {"attempt": 1}
    assert message.properties["correlation_id"] == "c-1"
    assert message.properties["reply_to"] == "replies"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["priority"] == 5
    assert message.delivery_info["exchange"] == "tasks"
    assert message.delivery_info["routing_key"] == "default"
    assert message.delivery_info["redelivered"] is False
    message.ack()
    assert message.acknowledged
    with pytest.raises(MessageStateError, match="already acknowledged"):
        message.ack()
    drain_idle(conn, 0.1)
    assert queue_depth(conn, "tasks.default") == 0


def test_simple_queue_round_trip(conn: Connection) -> None:
    with conn.SimpleQueue("simple", serializer="json") as queue:
        with pytest.raises(queue.Empty):
            queue.get_nowait()
        queue.put({"n": 1})
        queue.put({"n": 2})
        queue.put(["a", None])
        first = queue.get(block=True, timeout=WAIT)
        assert first.payload == {"n": 1}
        first.ack()
        second = queue.get(block=True, timeout=WAIT)
        assert second.payload == {"n": 2}
        second.ack()
        # The consumer that get() started may already hold the third message, so get_nowait()
        # (a basic.get) is not used after it.
        third = queue.get(timeout=WAIT)
        assert third.payload == ["a", None]
        third.ack()
        with pytest.raises(queue.Empty):
            queue.get(block=True, timeout=0.3)
        assert queue.qsize() == 0


def test_simple_buffer_is_a_fifo_without_acks(conn: Connection) -> None:
    with conn.SimpleBuffer("buffer") as buffer:
        for i in range(5):
            buffer.put(i)
        assert [buffer.get(timeout=WAIT).payload for _ in range(5)] == list(range(5))


def test_many_messages_arrive_in_fifo_order(conn: Connection) -> None:
    queue = Queue("fifo", Exchange("fifo", type="fanout"), auto_delete=False)
    with conn.Producer(serializer="json") as producer:
        for i in range(2000):
            producer.publish({"seq": i}, exchange=queue.exchange, declare=[queue])

    received: Received = []
    with Consumer(conn.channel(), queues=[queue], callbacks=[collect(received)],
                  accept=["json"], prefetch_count=100) as consumer:
        consumer.callbacks.append(lambda _body, message: message.ack())
        drain_until(conn, received, 2000, timeout=30)
    assert [body["seq"] for body, _ in received] == list(range(2000))
    drain_idle(conn, 0.1)
    assert queue_depth(conn, "fifo") == 0


def test_drain_events_times_out_when_idle(conn: Connection, broker_url: str) -> None:
    queue = Queue("idle", routing_key="idle")
    received: Received = []
    with Consumer(conn.channel(), queues=[queue], callbacks=[collect(received)],
                  accept=["json"]):
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
        assert 0.4 < time.monotonic() - started < 3

        with Connection(broker_url) as other, other.Producer(serializer="json") as producer:
            producer.publish("wake up", routing_key="idle")
        conn.drain_events(timeout=WAIT)
    assert [body for body, _ in received] == ["wake up"]
    received[0][1].ack()


def test_consumer_prefetch_limits_unacked_deliveries(conn: Connection) -> None:
    queue = Queue("prefetched", routing_key="prefetched")
    with conn.Producer(serializer="json") as producer:
        for i in range(6):
            producer.publish(i, routing_key="prefetched", declare=[queue])

    received: Received = []
    with Consumer(conn.channel(), queues=[queue], callbacks=[collect(received)],
                  accept=["json"], prefetch_count=2):
        drain_idle(conn)
        assert [body for body, _ in received] == [0, 1]
        received[0][1].ack()
        drain_idle(conn)
        assert [body for body, _ in received] == [0, 1, 2]
        for _, message in received[1:]:
            message.ack()
        drain_until(conn, received, 5)
        drain_idle(conn)
        assert [body for body, _ in received] == [0, 1, 2, 3, 4]
        received[3][1].ack()
        received[4][1].ack()
        drain_until(conn, received, 6)
        received[5][1].ack()


def test_reject_drops_and_requeue_redelivers(conn: Connection) -> None:
    queue = Queue("judged", routing_key="judged")
    with conn.Producer(serializer="json") as producer:
        for verdict in ("reject", "requeue", "ack"):
            producer.publish(verdict, routing_key="judged", declare=[queue])

    received: Received = []
    with Consumer(conn.channel(), queues=[queue], callbacks=[collect(received)],
                  accept=["json"], prefetch_count=1) as consumer:
        drain_until(conn, received, 1)
        received[0][1].reject()  # requeue=False: dropped (there is no dead-letter exchange)
        drain_until(conn, received, 2)
        received[1][1].requeue()
        drain_until(conn, received, 3)
        body, message = received[2]
        assert (body, message.delivery_info["redelivered"]) == ("requeue", True)
        message.ack()
        drain_until(conn, received, 4)
        assert received[3][0] == "ack"
        received[3][1].ack()
        consumer.cancel()
    assert [body for body, _ in received] == ["reject", "requeue", "requeue", "ack"]
    assert [m.delivery_info["redelivered"] for _, m in received] == [False, False, True, False]
    assert all(message.acknowledged for _, message in received)
    with pytest.raises(MessageStateError):
        received[0][1].requeue()
    drain_idle(conn, 0.1)
    assert queue_depth(conn, "judged") == 0


def test_unacked_messages_return_when_the_connection_closes(broker_url: str) -> None:
    queue = Queue("abandoned", routing_key="abandoned")
    with Connection(broker_url) as first:
        with first.Producer(serializer="json") as producer:
            producer.publish({"job": 1}, routing_key="abandoned", declare=[queue])
        received: Received = []
        with Consumer(first.channel(), queues=[queue], callbacks=[collect(received)],
                      accept=["json"]):
            drain_until(first, received, 1)
        # leave without acking

    with Connection(broker_url) as second:
        bound = queue(second.default_channel)
        message = bound.get(accept=["json"])
        assert message is not None
        assert message.payload == {"job": 1}
        assert message.delivery_info["redelivered"] is True
        message.ack()
        assert bound.get() is None


@pytest.mark.slow
def test_heartbeats_keep_an_idle_connection_open(broker_url: str) -> None:
    with Connection(broker_url, heartbeat=1) as conn:
        conn.connect()
        assert conn.connection.heartbeat == 1  # the client's wish, accepted by the broker
        idle_until = time.monotonic() + 3.5  # more than twice the interval
        while time.monotonic() < idle_until:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
            conn.heartbeat_check()
        assert conn.connection.connected
        with conn.SimpleQueue("after-idle") as queue:
            queue.put("still here")
            assert queue.get(timeout=WAIT).payload == "still here"


@pytest.mark.slow
def test_a_silent_client_is_dropped_and_its_unacked_message_redelivered(
    broker_url: str,
) -> None:
    # py-amqp sends heartbeats only from heartbeat_check(): a client that stops calling it
    # looks hung, and the broker must close it after two missed intervals and requeue.
    queue = Queue("hung", routing_key="hung")
    with Connection(broker_url, heartbeat=1) as silent:
        with silent.Producer(serializer="json") as producer:
            producer.publish("job", routing_key="hung", declare=[queue])
        received: Received = []
        Consumer(silent.channel(), queues=[queue], callbacks=[collect(received)],
                 accept=["json"]).consume()
        drain_until(silent, received, 1)
        went_silent = time.monotonic()

        with Connection(broker_url) as other:
            bound = queue(other.default_channel)
            while (message := bound.get(accept=["json"])) is None:
                assert time.monotonic() - went_silent < 10, "never redelivered"
                time.sleep(0.05)
            assert 1.5 < time.monotonic() - went_silent < 5
            assert message.payload == "job"
            assert message.delivery_info["redelivered"] is True
            message.ack()
        with pytest.raises(silent.connection_errors):
            silent.drain_events(timeout=1)


@pytest.mark.parametrize("login_method", [None, "PLAIN", "AMQPLAIN"])
def test_password_mechanisms(broker_url: str, login_method: str | None) -> None:
    with Connection(broker_url, login_method=login_method) as conn:
        conn.connect()
        assert conn.connected
        assert conn.connection.server_properties["product"] == "Leveret"
        with conn.SimpleQueue(f"auth-{login_method}") as queue:
            queue.put("hi")
            assert queue.get(timeout=WAIT).payload == "hi"


def test_wrong_password_is_refused(broker_url: str) -> None:
    bad = broker_url.replace("guest:guest@", "guest:wrong@")
    with Connection(bad, login_method="AMQPLAIN", connect_timeout=5) as conn, \
            pytest.raises(amqp.exceptions.AccessRefused, match="ACCESS_REFUSED"):
        conn.connect()


def test_connect_through_the_pytest_plugin_url(leveret_url: str) -> None:
    with Connection(leveret_url) as conn:
        conn.connect()
        assert conn.connected
        assert conn.virtual_host.startswith("test-")
        with conn.SimpleQueue("plugin") as queue:
            queue.put({"vhost": conn.virtual_host})
            assert queue.get(timeout=WAIT).payload == {"vhost": conn.virtual_host}
