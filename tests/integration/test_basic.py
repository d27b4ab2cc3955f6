"""Basic class semantics with a real pika client over TCP: publish, consume, get, acks,
prefetch, confirms, transactions, and where unacknowledged messages go when things close."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pika
import pika.exceptions
import pytest
from pamqp import commands
from pika.adapters.blocking_connection import BlockingChannel

from leveret import Broker
from tests.pikautil import drain
from tests.rawamqp import RawClient


@pytest.fixture
def conn(broker_url: str) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> BlockingChannel:
    return conn.channel()


def consume_n(channel: BlockingChannel, queue: str, n: int, *, ack: bool = True,
              timeout: float = 5.0) -> list[tuple[pika.spec.Basic.Deliver, bytes]]:
    got: list[tuple[pika.spec.Basic.Deliver, bytes]] = []
    for method, _, body in channel.consume(queue, inactivity_timeout=timeout):
        if method is None:
            break
        got.append((method, body))
        if ack:
            channel.basic_ack(method.delivery_tag)
        if len(got) == n:
            break
    channel.cancel()
    return got


def test_fifo_order_through_default_exchange(ch: BlockingChannel) -> None:
    ch.queue_declare("fifo")
    for i in range(200):
        ch.basic_publish("", "fifo", str(i).encode())
    assert drain(ch, "fifo") == [str(i).encode() for i in range(200)]


def test_properties_and_headers_pass_through_unchanged(ch: BlockingChannel) -> None:
    ch.queue_declare("props")
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2,
        priority=3, correlation_id="c-1", reply_to="r", expiration="60000", message_id="m-1",
        timestamp=1700000000, type="t", app_id="app", user_id="guest",
        headers={"int": 1, "str": "é", "decimal": Decimal("1.5"), "list": [1, "a"],
                 "nested": {"b": True}, "none": None, "big": 2**40},
    )
    ch.basic_publish("", "props", b"x", props)
    _method, got, body = ch.basic_get("props", auto_ack=True)
    assert body == b"x"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                  "app_id", "user_id", "headers"):
        assert getattr(got, field) == getattr(props, field), field


def test_large_message_spans_many_frames(ch: BlockingChannel) -> None:
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes, ~8 body frames each way
    ch.queue_declare("big")
    ch.basic_publish("", "big", body)
    assert drain(ch, "big") == [body]


def test_empty_body(ch: BlockingChannel) -> None:
    ch.queue_declare("empty")
    ch.basic_publish("", "empty", b"")
    assert drain(ch, "empty") == [b""]


def test_get_reports_remaining_message_count(ch: BlockingChannel) -> None:
    ch.queue_declare("counted")
    for i in range(3):
        ch.basic_publish("", "counted", b"%d" % i)
    method, _, _ = ch.basic_get("counted", auto_ack=True)
    assert method.message_count == 2
    assert ch.queue_declare("counted", passive=True).method.message_count == 2


def test_mandatory_unroutable_is_returned(ch: BlockingChannel) -> None:
    returned = []
    ch.add_on_return_callback(lambda _ch, method, props, body: returned.append((method, body)))
    ch.basic_publish("amq.direct", "nowhere", b"lost?", mandatory=True)
    ch.connection.process_data_events(time_limit=0.5)
    assert len(returned) == 1
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, method.exchange, method.routing_key, body) == (
        312, "NO_ROUTE", "amq.direct", "nowhere", b"lost?")


def test_confirms_mandatory_unroutable_raises_in_pika(ch: BlockingChannel) -> None:
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere", b"x", mandatory=True)
    ch.queue_declare("confirmed")
    ch.basic_publish("", "confirmed", b"ok", mandatory=True)  # acked, no exception


def test_round_robin_across_consumers(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("rr")
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    for tag in seen:
        ch.basic_consume("rr", lambda c, m, p, b: seen[m.consumer_tag].append(b),
                         auto_ack=True, consumer_tag=tag)
    for i in range(10):
        ch.basic_publish("", "rr", b"%d" % i)
    deadline = time.monotonic() + 5
    while sum(map(len, seen.values())) < 10 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert seen["a"] == [b"%d" % i for i in range(0, 10, 2)]
    assert seen["b"] == [b"%d" % i for i in range(1, 10, 2)]


def test_prefetch_limits_unacked_deliveries(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("pf")
    for i in range(10):
        ch.basic_publish("", "pf", b"%d" % i)
    ch.basic_qos(prefetch_count=3)
    got: list[pika.spec.Basic.Deliver] = []
    ch.basic_consume("pf", lambda c, m, p, b: got.append(m))
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 3
    ch.basic_ack(got[1].delivery_tag, multiple=True)  # frees two slots
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 5


def test_global_prefetch_is_shared_by_the_channel(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    for name in ("g1", "g2"):
        ch.queue_declare(name)
        for _ in range(3):
            ch.basic_publish("", name, b"x")
    ch.basic_qos(prefetch_count=2, global_qos=True)
    got: list[str] = []
    for name in ("g1", "g2"):
        ch.basic_consume(name, lambda c, m, p, b: got.append(m.routing_key))
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 2


def test_nack_multiple_requeues_in_original_order(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("nack")
    for i in range(5):
        ch.basic_publish("", "nack", b"%d" % i)
    first = consume_n(ch, "nack", 5, ack=False)
    ch.basic_nack(first[-1][0].delivery_tag, multiple=True, requeue=True)
    again = consume_n(ch, "nack", 5)
    assert [body for _, body in again] == [b"%d" % i for i in range(5)]
    assert all(method.redelivered for method, _ in again)


def test_reject_without_requeue_drops(ch: BlockingChannel) -> None:
    ch.queue_declare("rej")
    ch.basic_publish("", "rej", b"bad")
    method, _, _ = ch.basic_get("rej")
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ch.queue_declare("rej", passive=True).method.message_count == 0


def test_unknown_delivery_tag_closes_channel_with_406(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.basic_ack(99)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match=r"unknown delivery tag 99"):
        ch.queue_declare("after")
    assert conn.channel().queue_declare("still-works").method.queue == "still-works"


def test_recover_requeues_unacked(ch: BlockingChannel) -> None:
    ch.queue_declare("rec")
    ch.basic_publish("", "rec", b"again")
    method, _, _ = ch.basic_get("rec")
    assert not method.redelivered
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get("rec", auto_ack=True)
    assert (body, method.redelivered) == (b"again", True)


def test_unacked_return_when_channel_closes(conn: pika.BlockingConnection) -> None:
    worker = conn.channel()
    worker.queue_declare("crash")
    worker.basic_publish("", "crash", b"job")
    method, _, _ = worker.basic_get("crash")
    assert method is not None
    worker.close()
    other = conn.channel()
    method, _, body = other.basic_get("crash", auto_ack=True)
    assert (body, method.redelivered) == (b"job", True)


def test_unacked_return_when_connection_drops_without_close(broker: Broker) -> None:
    with RawClient("127.0.0.1", broker.port or 0) as worker:
        worker.handshake()
        worker.open_channel(1)
        worker.send(1, commands.Queue.Declare(queue="powercut"))
        worker.expect(commands.Queue.DeclareOk)
        worker.publish(1, "", "powercut", b"job")
        worker.send(1, commands.Basic.Get(queue="powercut"))
        worker.expect(commands.Basic.GetOk)
    # The worker's socket is gone without a Close frame, as when its machine loses power.
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        healthy = conn.channel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            method, _, body = healthy.basic_get("powercut", auto_ack=True)
            if method is not None:
                assert (body, method.redelivered) == (b"job", True)
                return
            time.sleep(0.05)
    pytest.fail("the dropped worker's message was not requeued")


def test_server_cancels_consumer_when_queue_deleted(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("doomed")
    cancelled: list[str] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume("doomed", lambda *a: None, consumer_tag="c1")
    conn.channel().queue_delete("doomed")
    conn.process_data_events(time_limit=0.5)
    assert cancelled == ["c1"]


def test_exclusive_consumer_refuses_others(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("solo")
    ch.basic_consume("solo", lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match=r"403.*exclusive use"):
        other.basic_consume("solo", lambda *a: None)


def test_cancel_stops_deliveries(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("cancel")
    got: list[bytes] = []
    tag = ch.basic_consume("cancel", lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_cancel(tag)
    ch.basic_publish("", "cancel", b"kept")
    conn.process_data_events(time_limit=0.3)
    assert got == []
    assert drain(ch, "cancel") == [b"kept"]


def test_user_id_must_match_authenticated_user(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("uid")
    ch.basic_publish("", "uid", b"x", pika.BasicProperties(user_id="bob"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"406.*user_id property set to 'bob'"):
        ch.queue_declare("uid", passive=True)


def test_publish_to_missing_exchange_is_404(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.basic_publish("no-such-exchange", "k", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"404.*no exchange 'no-such-exchange'"):
        ch.queue_declare("q", passive=True)


def test_confirms_ack_every_publish(ch: BlockingChannel) -> None:
    ch.confirm_delivery()
    ch.queue_declare("c")
    for i in range(100):
        ch.basic_publish("", "c", b"%d" % i)  # pika raises if a publish is nacked
    assert ch.queue_declare("c", passive=True).method.message_count == 100


def test_transaction_commit_and_rollback(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("tx")
    observer = conn.channel()
    ch.tx_select()
    ch.basic_publish("", "tx", b"one")
    assert observer.queue_declare("tx", passive=True).method.message_count == 0
    ch.tx_commit()
    assert observer.queue_declare("tx", passive=True).method.message_count == 1
    ch.basic_publish("", "tx", b"two")
    ch.tx_rollback()
    method, _, _body = ch.basic_get("tx")
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()  # the ack is undone: the message is unacked again
    ch.close()
    assert drain(observer, "tx") == [b"one"]


def test_tx_and_confirm_modes_exclude_each_other(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"406.*cannot switch from confirm to tx mode"):
        ch.tx_select()


def test_qos_prefetch_size_is_not_implemented(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match=r"540"):
        ch.basic_qos(prefetch_size=1000)


def test_message_size_limit(tmp_path: object) -> None:
    from leveret.config import Settings

    with Broker(settings=Settings(port=0, max_message_size=1000)) as small:
        conn = pika.BlockingConnection(pika.URLParameters(small.url))
        ch = conn.channel()
        ch.queue_declare("limited")
        ch.basic_publish("", "limited", b"x" * 1000)
        ch.basic_publish("", "limited", b"x" * 1001)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                           match=r"406.*message size 1001 is larger than configured max size 1000"):
            ch.queue_declare("limited", passive=True)
        assert conn.channel().queue_declare("limited", passive=True).method.message_count == 1
        conn.close()


def test_raising_prefetch_reaches_running_consumers(conn: pika.BlockingConnection) -> None:
    # kombu (and so Celery) raises a non-global prefetch while consuming and expects it to
    # apply at once; RabbitMQ 3.x would keep the old limit for existing consumers.
    ch = conn.channel()
    ch.queue_declare("raise")
    for i in range(5):
        ch.basic_publish("", "raise", b"%d" % i)
    ch.basic_qos(prefetch_count=1)
    got: list[bytes] = []
    ch.basic_consume("raise", lambda c, m, p, b: got.append(b))
    conn.process_data_events(time_limit=0.3)
    assert got == [b"0"]
    ch.basic_qos(prefetch_count=3)
    conn.process_data_events(time_limit=0.3)
    assert got == [b"0", b"1", b"2"]


def test_headers_nested_too_deep_are_refused_when_routing_needs_them(
    conn: pika.BlockingConnection,
) -> None:
    ch = conn.channel()
    ch.exchange_declare("deep", "headers")
    ch.queue_declare("deep-q")
    ch.queue_bind("deep-q", "deep", arguments={"x-match": "any", "k": "v"})
    nested: dict[str, object] = {"k": "v"}
    for _ in range(40):
        nested = {"n": nested}
    nested["k"] = "v"
    ch.basic_publish("deep", "", b"x", pika.BasicProperties(headers=nested))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"406.*nested deeper than 32 levels"):
        ch.queue_declare("deep-q", passive=True)
    # The same message through a direct exchange is passed on untouched, as RabbitMQ does.
    ch = conn.channel()
    ch.basic_publish("", "deep-q", b"y", pika.BasicProperties(headers=nested))
    _, props, body = ch.basic_get("deep-q", auto_ack=True)
    assert (body, props.headers) == (b"y", nested)


def test_a_no_ack_consumer_that_reads_slowly_leaves_the_backlog_in_the_queue(
    broker: Broker, ch: BlockingChannel,
) -> None:
    """Deliveries to a consumer wait for its socket: a deep queue is not moved into the
    broker's output buffers all at once (which would hold the whole backlog in memory)."""
    ch.queue_declare("deep")
    body = b"x" * 10_240
    for _ in range(3_000):  # 30 MiB
        ch.basic_publish("", "deep", body)
    queue = broker.vhosts["/"].queues["deep"]
    with RawClient("127.0.0.1", broker.port or 0) as client:
        client.handshake()
        client.open_channel()
        client.send(1, commands.Basic.Consume(queue="deep", consumer_tag="slow", no_ack=True))
        time.sleep(1.0)  # the client reads nothing: its socket buffers fill, then the broker's
        assert queue.message_count >= 1_500, queue.message_count
        received = 0
        while received < 3_000:  # now it reads: everything arrives
            _, frame = client.recv()
            received += isinstance(frame, commands.Basic.Deliver)
    assert queue.message_count == 0
