"""Reliability features Leveret has beyond RabbitMQ 3.10's classic queues, through a real
client: TTL that expires anywhere in a queue, delivery limits and x-delivery-count, delayed
delivery (x-delay and x-delayed-message, durable across restarts), deduplication, consumer
timeouts, policies, and durable priority queues."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pamqp import commands
from pika.adapters.blocking_connection import BlockingChannel

from leveret import Broker
from leveret.config import load_settings
from tests.pikautil import drain
from tests.rawamqp import RawClient

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def ch(broker_url: str) -> Iterator[BlockingChannel]:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as conn:
        yield conn.channel()


def dead_letter_queue(ch: BlockingChannel, name: str = "dlq") -> dict[str, object]:
    ch.exchange_declare("dlx", "fanout")
    ch.queue_declare(name)
    ch.queue_bind(name, "dlx")
    return {"x-dead-letter-exchange": "dlx"}


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def test_a_message_expires_where_it_sits_not_only_at_the_head(ch: BlockingChannel) -> None:
    ch.queue_declare("ttl", arguments=dead_letter_queue(ch))
    ch.basic_publish("", "ttl", b"patient", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", "ttl", b"hasty", pika.BasicProperties(expiration="100"))
    started = time.monotonic()
    assert wait_for(lambda: count(ch, "dlq") == 1)
    assert time.monotonic() - started < 1.0  # RabbitMQ would hold it behind "patient"
    _method, props, body = ch.basic_get("dlq", auto_ack=True)
    assert body == b"hasty"
    assert props.expiration is None
    assert props.headers["x-death"][0]["reason"] == "expired"
    assert props.headers["x-death"][0]["original-expiration"] == "100"
    assert drain(ch, "ttl") == [b"patient"]


def test_invalid_expiration_is_refused(ch: BlockingChannel) -> None:
    ch.queue_declare("q")
    ch.basic_publish("", "q", b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"406.*invalid expiration 'soon': no_integer"):
        ch.queue_declare("q", passive=True)


def test_a_poison_message_is_dead_lettered_after_its_delivery_limit(
    ch: BlockingChannel,
) -> None:
    ch.queue_declare("work", arguments={**dead_letter_queue(ch), "x-delivery-limit": 2})
    ch.basic_publish("", "work", b"poison")
    counts = []
    while (frame := ch.basic_get("work"))[0] is not None:
        counts.append(frame[1].headers["x-delivery-count"])
        ch.basic_nack(frame[0].delivery_tag, requeue=True)
    assert counts == [0, 1, 2]  # delivered three times, returned three times
    _method, props, body = ch.basic_get("dlq", auto_ack=True)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"


def test_a_crashing_consumer_counts_towards_the_limit(broker_url: str) -> None:
    params = pika.URLParameters(broker_url)
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.queue_declare("crashy", arguments={**dead_letter_queue(ch), "x-delivery-limit": 1})
        ch.basic_publish("", "crashy", b"kills workers")
        for _ in range(2):
            with pika.BlockingConnection(params) as worker:
                assert worker.channel().basic_get("crashy")[0] is not None
            # the worker's connection is gone without an ack: the message comes back
        assert ch.basic_get("crashy")[0] is None
        assert drain(ch, "dlq") == [b"kills workers"]


@pytest.mark.parametrize("exchange_type", ["direct", "topic"])
def test_x_delay_holds_a_message_then_routes_it(ch: BlockingChannel, exchange_type: str) -> None:
    ch.exchange_declare("events", exchange_type)
    ch.queue_declare("later")
    ch.queue_bind("later", "events", "k")
    ch.confirm_delivery()
    ch.basic_publish("events", "k", b"in 400 ms", pika.BasicProperties(headers={"x-delay": 400}))
    ch.basic_publish("events", "k", b"now", pika.BasicProperties(headers={"x-delay": 0}))
    published = time.monotonic()
    assert drain(ch, "later") == [b"now"]
    assert wait_for(lambda: count(ch, "later") == 1)
    assert time.monotonic() - published >= 0.38
    method, _props, body = ch.basic_get("later", auto_ack=True)
    assert (method.exchange, method.routing_key, body) == ("events", "k", b"in 400 ms")


def test_the_delayed_message_exchange_type(ch: BlockingChannel) -> None:
    ch.exchange_declare("delayed", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    ch.exchange_declare("delayed", "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    ch.queue_declare("d")
    ch.queue_bind("d", "delayed")
    ch.basic_publish("delayed", "any", b"x", pika.BasicProperties(headers={"x-delay": 100}))
    assert count(ch, "d") == 0
    assert wait_for(lambda: count(ch, "d") == 1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                       match=r"406.*'x-delayed-type' must be an existing exchange type"):
        ch.exchange_declare("bad", "x-delayed-message", arguments={"x-delayed-type": "nope"})


def test_delays_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("retry", durable=True)
        ch.basic_publish("", "retry", b"durable",
                         pika.BasicProperties(delivery_mode=2, headers={"x-delay": 1500}))
        ch.basic_publish("", "retry", b"transient", pika.BasicProperties(headers={"x-delay": 1500}))
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        assert count(ch, "retry") == 0
        assert wait_for(lambda: count(ch, "retry") == 1, timeout=5)
        assert drain(ch, "retry") == [b"durable"]


def test_expiring_messages_survive_a_restart_and_still_expire(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare("dlx", "fanout", durable=True)
        ch.queue_declare("dlq", durable=True)
        ch.queue_bind("dlq", "dlx")
        ch.queue_declare("q", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
        ch.basic_publish("", "q", b"keeps", PERSISTENT)
        ch.basic_publish("", "q", b"goes", pika.BasicProperties(delivery_mode=2,
                                                                  expiration="1500"))
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        assert wait_for(lambda: count(ch, "dlq") == 1, timeout=5)
        assert drain(ch, "dlq") == [b"goes"]
        assert drain(ch, "q") == [b"keeps"]


def test_durable_priority_queue_keeps_its_order_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("jobs", durable=True, arguments={"x-max-priority": 3})
        for body, priority in ((b"low-1", 0), (b"high-1", 3), (b"mid", 2), (b"high-2", 9),
                               (b"low-2", 0)):
            ch.basic_publish("", "jobs", body, pika.BasicProperties(delivery_mode=2,
                                                                     priority=priority))
    with Broker(data_dir=data) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        assert drain(conn.channel(), "jobs") == [b"high-1", b"high-2", b"mid", b"low-1",
                                                 b"low-2"]


def test_deduplication_with_a_cache_ttl(ch: BlockingChannel) -> None:
    ch.queue_declare("dedup", arguments={"x-message-deduplication": True, "x-cache-ttl": 300})
    ch.confirm_delivery()
    for body in (b"first", b"again"):  # the second is a duplicate: acked, then dropped
        ch.basic_publish("", "dedup", body,
                         pika.BasicProperties(headers={"x-deduplication-header": "order-7"}))
    ch.basic_publish("", "dedup", b"other",
                     pika.BasicProperties(headers={"x-deduplication-header": "order-8"}))
    ch.basic_publish("", "dedup", b"no header")
    assert drain(ch, "dedup") == [b"first", b"other", b"no header"]
    time.sleep(0.4)
    ch.basic_publish("", "dedup", b"after the ttl",
                     pika.BasicProperties(headers={"x-deduplication-header": "order-7"}))
    assert drain(ch, "dedup") == [b"after the ttl"]


def test_deduplication_without_ttl_lasts_while_in_the_queue(ch: BlockingChannel) -> None:
    ch.queue_declare("dedup2", arguments={"x-message-deduplication": True})
    key = pika.BasicProperties(headers={"x-deduplication-header": 42})
    ch.basic_publish("", "dedup2", b"one", key)
    ch.basic_publish("", "dedup2", b"two", key)
    assert drain(ch, "dedup2") == [b"one"]
    ch.basic_publish("", "dedup2", b"three", key)  # "one" has left: allowed again
    assert drain(ch, "dedup2") == [b"three"]


def test_a_hung_consumer_times_out(broker: Broker) -> None:
    with RawClient("127.0.0.1", broker.port or 0) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="slow", arguments={
            "x-consumer-timeout": 300}))
        client.expect(commands.Queue.DeclareOk)
        client.publish(1, "", "slow", b"job")
        client.send(1, commands.Basic.Consume(queue="slow"))
        client.expect(commands.Basic.ConsumeOk)
        client.expect(commands.Basic.Deliver)  # and never acked
        client.recv(), client.recv()  # its content header and body
        started = time.monotonic()
        close = client.expect(commands.Channel.Close, timeout=5)
        assert close.reply_code == 406
        assert close.reply_text.startswith(
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
            "Timeout value used: 300 ms")
        assert 0.25 < time.monotonic() - started < 2
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        method, _, body = conn.channel().basic_get("slow", auto_ack=True)
        assert (body, method.redelivered) == (b"job", True)


def test_policies_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "leveret.toml"
    config.write_text(
        '[[policies]]\nname = "retry"\npattern = "^work\\\\."\npriority = 1\n'
        '[policies.definition]\ndead-letter-exchange = "dlx"\nmessage-ttl = 100\n'
    )
    settings = load_settings({"port": 0}, config_file=config, environ={})
    with Broker(settings=settings) as broker, \
            pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        dead_letter_queue(ch)
        ch.queue_declare("work.emails")
        ch.queue_declare("other")
        ch.basic_publish("", "work.emails", b"expires by policy")
        ch.basic_publish("", "other", b"stays")
        assert wait_for(lambda: count(ch, "dlq") == 1)
        assert drain(ch, "other") == [b"stays"]


def test_every_redelivery_carries_its_count(ch: BlockingChannel) -> None:
    ch.queue_declare("plain")
    ch.basic_publish("", "plain", b"x")
    method, props, _ = ch.basic_get("plain")
    assert props.headers is None  # a first delivery from a plain queue is untouched
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, _ = ch.basic_get("plain", auto_ack=True)
    assert method.redelivered and props.headers == {"x-delivery-count": 1}
