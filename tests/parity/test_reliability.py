"""Parity of the reliability features RabbitMQ 3.10 has too: dead-lettering and its x-death
headers, queue TTL, length limits with each overflow mode, priorities, single active consumer,
x-expires and dead-letter cycles. The same scenario runs on both brokers (see test_parity.py);
what pika observes must match, except values that are times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.parity.conftest import Scenario

pytestmark = pytest.mark.rabbitmq

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def without_times(headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """Headers with death times dropped (they differ) and RabbitMQ 3.13's x-last-death-*
    (which 3.10 does not send) left out."""
    if headers is None:
        return None
    out = {k: v for k, v in headers.items() if not k.startswith("x-last-death-")}
    if "x-death" in out:
        out["x-death"] = [{k: v for k, v in d.items() if k != "time"} for d in out["x-death"]]
    return out


def take_all(ch: BlockingChannel, queue: str) -> list[tuple[bytes, Any]]:
    out = []
    while (frame := ch.basic_get(queue, auto_ack=True))[0] is not None:
        out.append((frame[2], without_times(frame[1].headers)))
    return out


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def setup_dlx(ch: BlockingChannel, p: str, **arguments: Any) -> None:
    ch.exchange_declare(p + "x", "fanout", auto_delete=False)
    ch.queue_declare(p + "q2")  # the dead-letter queue
    ch.queue_bind(p + "q2", p + "x")
    ch.queue_declare(p + "q", arguments={"x-dead-letter-exchange": p + "x", **arguments})


def test_rejected_messages_are_dead_lettered(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            setup_dlx(ch, p, **{"x-dead-letter-routing-key": "rk"})
            ch.basic_publish("", p + "q", b"one", pika.BasicProperties(headers={"h": 1}))
            ch.basic_publish("", p + "q", b"two")
            first = ch.basic_get(p + "q")[0]
            ch.basic_reject(first.delivery_tag, requeue=False)
            second = ch.basic_get(p + "q")[0]
            ch.basic_nack(second.delivery_tag, requeue=False)
            wait_until(lambda: ch.queue_declare(p + "q2", passive=True)
                       .method.message_count == 2)
            got = []
            while (frame := ch.basic_get(p + "q2", auto_ack=True))[0] is not None:
                got.append((frame[0].exchange, frame[0].routing_key, frame[2],
                            without_times(frame[1].headers)))
            return got

    compare(scenario)


def test_queue_ttl_expires_and_dead_letters(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            setup_dlx(ch, p, **{"x-message-ttl": 200})
            for i in range(3):
                ch.basic_publish("", p + "q", b"%d" % i, pika.BasicProperties(expiration="5000"))
            wait_until(lambda: ch.queue_declare(p + "q2", passive=True)
                       .method.message_count == 3)
            left = ch.queue_declare(p + "q", passive=True).method.message_count
            return left, take_all(ch, p + "q2")

    compare(scenario)


def test_per_message_ttl_at_the_head_and_zero_ttl(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            setup_dlx(ch, p)
            ch.basic_publish("", p + "q", b"short", pika.BasicProperties(expiration="100"))
            ch.basic_publish("", p + "q", b"zero", pika.BasicProperties(expiration="0"))
            ch.basic_publish("", p + "q", b"long", pika.BasicProperties(expiration="60000"))
            wait_until(lambda: ch.queue_declare(p + "q2", passive=True)
                       .method.message_count == 2)
            return take_all(ch, p + "q"), sorted(take_all(ch, p + "q2"), key=repr)

    compare(scenario)


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish", "reject-publish-dlx"])
def test_length_limits(compare: Callable[[Scenario], None], overflow: str) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            setup_dlx(ch, p, **{"x-max-length": 2, "x-overflow": overflow})
            ch.confirm_delivery()
            outcomes = []
            for i in range(4):
                try:
                    ch.basic_publish("", p + "q", b"%d" % i)
                    outcomes.append("ack")
                except pika.exceptions.NackError:
                    outcomes.append("nack")
            time.sleep(0.2)
            return outcomes, take_all(ch, p + "q"), take_all(ch, p + "q2")

    compare(scenario)


def test_max_length_bytes(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare(p + "q", arguments={"x-max-length-bytes": 10})
            for body in (b"aaaa", b"bbbb", b"cccc", b"dd"):
                ch.basic_publish("", p + "q", body)
            return take_all(ch, p + "q")

    compare(scenario)


def test_priorities(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare(p + "q", arguments={"x-max-priority": 5})
            for body, priority in ((b"a", 0), (b"b", 5), (b"c", 9), (b"d", 1), (b"e", 5),
                                   (b"f", None)):
                ch.basic_publish("", p + "q", body, pika.BasicProperties(priority=priority))
            method, _, body = ch.basic_get(p + "q")
            ch.basic_nack(method.delivery_tag, requeue=True)  # back to its level's front
            return [body, *[b for b, _ in take_all(ch, p + "q")]]

    compare(scenario)


def test_single_active_consumer(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        params = pika.URLParameters(url)
        with pika.BlockingConnection(params) as owner:
            owner.channel().queue_declare(p + "q", arguments={"x-single-active-consumer": True})
            conns = {tag: pika.BlockingConnection(params) for tag in ("first", "second")}
            got: dict[str, list[tuple[bytes, bool]]] = {tag: [] for tag in conns}
            for tag, conn in conns.items():
                ch = conn.channel()
                ch.basic_qos(prefetch_count=10)
                ch.basic_consume(p + "q", lambda c, m, pr, b, tag=tag: got[tag].append(
                    (b, m.redelivered)))
                conn.process_data_events(time_limit=0.1)
            publisher = owner.channel()
            for i in range(4):
                publisher.basic_publish("", p + "q", b"%d" % i)
            deadline = time.monotonic() + 2
            while len(got["first"]) < 4 and time.monotonic() < deadline:
                conns["first"].process_data_events(time_limit=0.1)
            conns["second"].process_data_events(time_limit=0.2)
            conns["first"].close()  # its unacked messages go to the next active consumer
            for i in range(4, 6):
                publisher.basic_publish("", p + "q", b"%d" % i)
            deadline = time.monotonic() + 2
            while len(got["second"]) < 6 and time.monotonic() < deadline:
                conns["second"].process_data_events(time_limit=0.1)
            conns["second"].close()
            return got

    compare(scenario)


def test_unused_queue_expires(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare(p + "q", arguments={"x-expires": 300})
            time.sleep(0.15)
            ch.queue_declare(p + "q", arguments={"x-expires": 300})  # a use: clock restarts
            time.sleep(0.2)
            alive = ch.queue_declare(p + "q", passive=True).method.queue
            time.sleep(0.8)
            try:
                conn.channel().queue_declare(p + "q", passive=True)
                gone = False
            except pika.exceptions.ChannelClosedByBroker as err:
                gone = err.reply_code == 404
            return alive == p + "q", gone

    compare(scenario)


def test_expiry_cycles_are_dropped_and_reject_cycles_are_not(
    compare: Callable[[Scenario], None],
) -> None:
    def scenario(url: str, p: str) -> Any:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            # A TTL queue that dead-letters into itself: the expired copy is dropped.
            ch.queue_declare(p + "q", arguments={"x-message-ttl": 100,
                                                 "x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": p + "q"})
            ch.basic_publish("", p + "q", b"loops")
            time.sleep(0.5)
            looped = ch.queue_declare(p + "q", passive=True).method.message_count
            # Work queue -> retry queue (TTL) -> back: the retry pattern goes round.
            ch.queue_declare(p + "q2", arguments={"x-dead-letter-exchange": "",
                                                  "x-dead-letter-routing-key": p + "q3"})
            ch.queue_declare(p + "q3", arguments={"x-message-ttl": 100,
                                                  "x-dead-letter-exchange": "",
                                                  "x-dead-letter-routing-key": p + "q2"})
            ch.basic_publish("", p + "q2", b"retry me")
            rounds = []
            for _ in range(2):
                method = ch.basic_get(p + "q2")[0]
                ch.basic_reject(method.delivery_tag, requeue=False)
                wait_until(lambda: ch.queue_declare(p + "q2", passive=True)
                           .method.message_count == 1)
                rounds.append(ch.queue_declare(p + "q2", passive=True).method.message_count)
            frame = ch.basic_get(p + "q2", auto_ack=True)
            deaths = [(d["queue"][len(p):], d["reason"], d["count"])
                      for d in frame[1].headers["x-death"]]
            return looped, rounds, deaths

    compare(scenario)
