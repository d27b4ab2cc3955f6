"""Parity: the same scenarios, driven by pika, against the RabbitMQ on 127.0.0.1:5672 and against
Leveret; what the client observes (replies, error codes and texts, deliveries and their flags)
must be the same.

Each scenario is a function of a URL and a name prefix that returns what it observed. Names are
the same on both servers, so error texts that quote them compare exactly. Whatever a scenario
creates on RabbitMQ is deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.parity.conftest import Observation, Scenario

pytestmark = pytest.mark.rabbitmq


def attempt(url: str, action: Callable[[BlockingChannel], Any]) -> Observation:
    """Run ``action`` on a fresh channel; observe its result or the error that closed things."""
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        try:
            result = action(ch)
            conn.process_data_events(time_limit=0.2)  # let an asynchronous close arrive
            if not ch.is_open:
                raise pika.exceptions.ChannelClosedByBroker(0, "closed")
            return ("ok", result)
        except pika.exceptions.ChannelClosedByBroker as err:
            return ("channel", err.reply_code, err.reply_text)
        except pika.exceptions.ConnectionClosedByBroker as err:
            return ("connection", err.reply_code, err.reply_text)


def method_fields(frame: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(frame.method).items() if not k.startswith("_")}


# -- scenarios ---------------------------------------------------------------------------


def test_declare_and_delete_rules(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.exchange_declare(p + "x", "direct", durable=True)
            ch.queue_declare(p + "ttl", arguments={"x-message-ttl": 1000})
            ch.queue_declare(p + "busy")
            ch.basic_consume(p + "busy", lambda *a: None)
            ch.queue_declare(p + "full")
            ch.basic_publish("", p + "full", b"x")
            ch.exchange_declare(p + "int", "fanout", internal=True)
            actions: list[Callable[[BlockingChannel], Any]] = [
                lambda c: c.queue_declare(p + "missing", passive=True),
                lambda c: c.exchange_declare(p + "missing", passive=True),
                lambda c: c.exchange_declare("amq." + p + "x"),
                lambda c: c.queue_declare("amq." + p + "q"),
                lambda c: c.exchange_declare("amq.direct", "fanout", durable=True),
                lambda c: c.exchange_declare("amq.direct", "direct", durable=False),
                lambda c: c.exchange_declare(p + "x", "direct", durable=False),
                lambda c: c.exchange_declare(p + "x", "topic", durable=True),
                lambda c: c.exchange_declare("", "direct", passive=True),
                lambda c: c.exchange_declare(p + "nonsense", "nonsense"),
                lambda c: c.exchange_delete("amq.direct"),
                lambda c: c.exchange_delete(""),
                lambda c: c.exchange_delete(p + "never-declared"),
                lambda c: method_fields(c.queue_delete(p + "never-declared")),
                lambda c: c.queue_purge(p + "never-declared"),
                lambda c: c.queue_bind(p + "ttl", ""),
                lambda c: c.queue_bind(p + "ttl", p + "missing"),
                lambda c: c.queue_bind(p + "missing", p + "x"),
                lambda c: c.queue_unbind(p + "missing", p + "missing"),
                lambda c: c.exchange_bind(p + "x", p + "missing"),
                lambda c: c.exchange_unbind(p + "x", p + "missing"),
                lambda c: c.queue_declare(p + "ttl", durable=True,
                                          arguments={"x-message-ttl": 1000}),
                lambda c: c.queue_declare(p + "ttl", arguments={"x-message-ttl": 2000}),
                lambda c: c.queue_declare(p + "ttl", arguments={"x-message-ttl": 1000,
                                                                "x-foo": "bar"}),
                lambda c: c.queue_declare(p + "ttl", exclusive=True,
                                          arguments={"x-message-ttl": 1000}),
                lambda c: c.queue_delete(p + "busy", if_unused=True),
                lambda c: c.queue_delete(p + "full", if_empty=True),
                lambda c: c.basic_publish(p + "missing", "k", b"x"),
                lambda c: c.basic_publish(p + "int", "k", b"x"),
                lambda c: c.basic_publish("", "k", b"x", pika.BasicProperties(user_id="bob")),
                lambda c: c.basic_consume(p + "missing", lambda *a: None),
            ]
            return [attempt(url, action) for action in actions]

    compare(scenario)


@pytest.mark.parametrize("arguments", [
    {"x-message-ttl": -1}, {"x-message-ttl": "abc"}, {"x-max-priority": 256},
    {"x-max-priority": -1}, {"x-expires": 0}, {"x-expires": -5},
    {"x-dead-letter-routing-key": "k"}, {"x-overflow": "bogus"}, {"x-queue-type": "bogus"},
    {"x-queue-mode": "bogus"}, {"x-single-active-consumer": "yes"}, {"x-max-length": -1},
    {"x-max-length-bytes": -1}, {"x-foo": "accepted"}, {"x-overflow": "reject-publish-dlx"},
], ids=str)
def test_queue_argument_validation(compare: Callable[[Scenario], None],
                                   arguments: dict[str, Any]) -> None:
    compare(lambda url, p: attempt(url, lambda c: method_fields(
        c.queue_declare(p + "q", arguments=arguments))["message_count"]))


def test_basic_method_errors(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        def exclusive_conflict(c: BlockingChannel) -> None:
            c.queue_declare(p + "solo")
            c.basic_consume(p + "solo", lambda *a: None)
            c.basic_consume(p + "solo", lambda *a: None, exclusive=True)

        def double_ack(c: BlockingChannel) -> None:
            c.queue_declare(p + "q2")
            c.basic_publish("", p + "q2", b"x")
            method, _, _ = c.basic_get(p + "q2")
            c.basic_ack(method.delivery_tag)
            c.basic_ack(method.delivery_tag)

        actions: list[Callable[[BlockingChannel], Any]] = [
            lambda c: c.basic_ack(99),
            lambda c: c.basic_ack(0, multiple=True),
            lambda c: c.basic_nack(0, multiple=True),
            lambda c: c.basic_reject(7),
            double_ack,
            lambda c: c.basic_qos(prefetch_size=1000),
            lambda c: c.basic_recover(requeue=False),
            lambda c: (c.confirm_delivery(), c.tx_select()),
            lambda c: (c.tx_select(), c.confirm_delivery()),
            lambda c: c.tx_commit(),
            lambda c: c.tx_rollback(),
            lambda c: c.flow(False),
            exclusive_conflict,
            lambda c: c.basic_cancel("not-a-consumer"),
        ]
        return [attempt(url, action) for action in actions]

    compare(scenario)


def test_exclusive_queue_seen_from_another_connection(compare: Callable[[Scenario],
                                                                        None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        with pika.BlockingConnection(pika.URLParameters(url)) as owner:
            owner.channel().queue_declare(p + "excl", exclusive=True)
            name = p + "excl"
            actions: list[Callable[[BlockingChannel], Any]] = [
                lambda c: c.queue_declare(name, passive=True),
                lambda c: c.queue_declare(name, exclusive=True),
                lambda c: c.basic_consume(name, lambda *a: None),
                lambda c: c.queue_purge(name),
                lambda c: c.queue_delete(name),
                lambda c: c.basic_get(name),
                lambda c: c.queue_bind(name, "amq.direct", "k"),
                lambda c: c.queue_unbind(name, "amq.direct", "k"),
                lambda c: c.basic_publish("", name, b"accepted"),
            ]
            observed = [attempt(url, action) for action in actions]
            owner.channel().queue_declare(name, passive=True)
            observed.append(owner.channel().basic_get(name, auto_ack=True)[2])
        observed.append(attempt(url, lambda c: c.queue_declare(name, passive=True)))
        return observed

    compare(scenario)


def test_routing(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.exchange_declare(p + "t", "topic", auto_delete=True)
            ch.exchange_declare(p + "h", "headers", auto_delete=True)
            ch.exchange_declare(p + "f", "fanout", auto_delete=True)
            ch.exchange_declare(p + "ae", "fanout", auto_delete=True)
            ch.exchange_declare(p + "d", "direct", auto_delete=True,
                                arguments={"alternate-exchange": p + "ae"})
            queues = {}
            bindings = [
                ("a", p + "t", "*.orange.*", None), ("b", p + "t", "*.*.rabbit", None),
                ("b", p + "t", "lazy.#", None), ("c", p + "t", "#", None),
                ("all", p + "h", "", {"x-match": "all", "k": "v", "n": 1}),
                ("any", p + "h", "", {"x-match": "any", "k": "v", "n": 1}),
                ("hx", p + "h", "", {"x-match": "any-with-x", "x-k": "v"}),
                ("a", p + "d", "orange", None), ("q3", p + "ae", "", None),
            ]
            for suffix, exchange, key, args in bindings:
                queues[suffix] = ch.queue_declare(p + suffix, auto_delete=False).method.queue
                ch.queue_bind(p + suffix, exchange, key, arguments=args)
            ch.exchange_bind(p + "t", p + "f")  # fanout -> topic
            for key in ("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
                        "lazy.brown.fox", "lazy", "quick.brown.fox.jumps", "", "a..b"):
                ch.basic_publish(p + "t", key, key.encode() or b"(empty)")
            ch.basic_publish(p + "f", "lazy.via.fanout", b"via fanout")
            for headers in ({"k": "v", "n": 1}, {"k": "v"}, {"n": Decimal("1.0")},
                            {"x-k": "v"}, {"k": "V"}, {"n": True}, None):
                ch.basic_publish(p + "h", "", repr(headers).encode(),
                                 pika.BasicProperties(headers=headers))
            ch.basic_publish(p + "d", "orange", b"direct hit")
            ch.basic_publish(p + "d", "purple", b"to the alternate exchange")
            got = {}
            for suffix in queues:
                bodies = []
                while (frame := ch.basic_get(p + suffix, auto_ack=True))[0] is not None:
                    bodies.append(frame[2])
                got[suffix] = bodies
            return got

    compare(scenario)


def test_acks_nacks_and_redelivery(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        observed: list[Any] = []
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare(p + "q")
            for i in range(6):
                ch.basic_publish("", p + "q", b"%d" % i)
            gets = [ch.basic_get(p + "q") for _ in range(5)]
            observed.append([(m.delivery_tag, m.redelivered, m.message_count, b)
                             for m, _, b in gets])
            ch.basic_reject(2, requeue=True)
            ch.basic_nack(4, multiple=False, requeue=True)
            ch.basic_nack(3, multiple=True, requeue=True)  # tags 1 and 3
            ch.basic_ack(5)
            rest = []
            while (frame := ch.basic_get(p + "q", auto_ack=True))[0] is not None:
                rest.append((frame[0].redelivered, frame[2]))
            observed.append(rest)
            ch.basic_publish("", p + "q", b"recover me")
            method, _, _ = ch.basic_get(p + "q")
            ch.basic_recover(requeue=True)
            method, _, body = ch.basic_get(p + "q", auto_ack=True)
            observed.append((method.redelivered, body))
            worker = conn.channel()
            worker.basic_publish("", p + "q", b"held by a closing channel")
            worker.basic_get(p + "q")
            worker.close()
            method, _, body = ch.basic_get(p + "q", auto_ack=True)
            observed.append((method.redelivered, body))
        return observed

    compare(scenario)


def test_counts_and_prefetch(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        observed: list[Any] = []
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            for suffix in ("q", "q2"):
                ch.queue_declare(p + suffix)
                for i in range(4):
                    ch.basic_publish("", p + suffix, b"%d" % i)
            ch.basic_get(p + "q")  # one unacked
            consumer = conn.channel()
            consumer.basic_qos(prefetch_count=1)
            consumer.basic_consume(p + "q", lambda *a: None)
            conn.process_data_events(time_limit=0.3)
            ok = ch.queue_declare(p + "q", passive=True).method
            observed.append((ok.message_count, ok.consumer_count))
            for global_qos in (False, True):
                c = conn.channel()
                c.basic_qos(prefetch_count=1, global_qos=global_qos)
                got: list[bytes] = []
                for suffix in ("q2", "q"):
                    c.basic_consume(p + suffix, lambda ch_, m, pr, b, got=got: got.append(b))
                conn.process_data_events(time_limit=0.3)
                observed.append(len(got))
                c.close()
            observed.append(ch.queue_purge(p + "q").method.message_count)
        return observed

    compare(scenario)


def test_mandatory_confirms_and_transactions(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        observed: list[Any] = []
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            returned: list[Any] = []
            ch.add_on_return_callback(
                lambda _c, m, props, body: returned.append((m.reply_code, m.reply_text,
                                                            m.exchange, m.routing_key, body)))
            ch.basic_publish("amq.direct", p + "nowhere", b"back", mandatory=True)
            conn.process_data_events(time_limit=0.3)
            observed.append(list(returned))
            tx = conn.channel()
            tx.add_on_return_callback(lambda _c, m, props, body: returned.append(body))
            tx.tx_select()
            tx.queue_declare(p + "q")
            tx.basic_publish("", p + "q", b"committed")
            tx.basic_publish("amq.direct", p + "nowhere", b"returned at commit", mandatory=True)
            observed.append(ch.queue_declare(p + "q", passive=True).method.message_count)
            tx.tx_commit()
            conn.process_data_events(time_limit=0.3)
            observed.append(returned[-1])
            tx.basic_publish("", p + "q", b"rolled back")
            tx.tx_rollback()
            observed.append(ch.queue_declare(p + "q", passive=True).method.message_count)
            confirmed = conn.channel()
            confirmed.confirm_delivery()
            try:
                confirmed.basic_publish("amq.direct", p + "nowhere", b"x", mandatory=True)
            except pika.exceptions.UnroutableError as err:
                observed.append(("unroutable", len(err.messages)))
            confirmed.basic_publish("", p + "q", b"confirmed")
            observed.append(ch.queue_declare(p + "q", passive=True).method.message_count)
        return observed

    compare(scenario)


def test_consumer_cancel_notification(compare: Callable[[Scenario], None]) -> None:
    def scenario(url: str, p: str) -> Observation:
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare(p + "q")
            cancelled: list[str] = []
            ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
            ch.basic_consume(p + "q", lambda *a: None, consumer_tag="watcher")
            conn.channel().queue_delete(p + "q")
            deadline = time.monotonic() + 2
            while not cancelled and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
            return cancelled, ch.is_open

    compare(scenario)
