"""Exchange and queue semantics with a real pika client: routing by every exchange type,
exchange-to-exchange bindings, declare rules and their error codes, exclusive and auto-delete
lifetimes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.pikautil import drain as bodies

ChannelClosed = pika.exceptions.ChannelClosedByBroker


@pytest.fixture
def conn(broker_url: str) -> Iterator[pika.BlockingConnection]:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        yield connection


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> BlockingChannel:
    return conn.channel()


def test_direct_routes_by_exact_key(ch: BlockingChannel) -> None:
    ch.exchange_declare("d", "direct")
    for name, key in (("qa", "a"), ("qb", "b")):
        ch.queue_declare(name)
        ch.queue_bind(name, "d", key)
    ch.basic_publish("d", "a", b"for a")
    ch.basic_publish("d", "c", b"for nobody")
    assert (bodies(ch, "qa"), bodies(ch, "qb")) == ([b"for a"], [])


def test_fanout_copies_to_every_queue(ch: BlockingChannel) -> None:
    ch.exchange_declare("f", "fanout")
    for name in ("f1", "f2", "f3"):
        ch.queue_declare(name)
        ch.queue_bind(name, "f", "ignored")
    ch.basic_publish("f", "anything", b"all")
    assert [bodies(ch, n) for n in ("f1", "f2", "f3")] == [[b"all"]] * 3


def test_topic_patterns(ch: BlockingChannel) -> None:
    ch.exchange_declare("t", "topic")
    patterns = {"star": "stock.*.nyse", "hash": "stock.#", "all": "#", "exact": "stock.ibm.nyse"}
    for name, pattern in patterns.items():
        ch.queue_declare(name)
        ch.queue_bind(name, "t", pattern)
    ch.basic_publish("t", "stock.ibm.nyse", b"1")
    ch.basic_publish("t", "stock.ibm.nasdaq.extra", b"2")
    ch.basic_publish("t", "bond", b"3")
    assert bodies(ch, "star") == [b"1"]
    assert bodies(ch, "hash") == [b"1", b"2"]
    assert bodies(ch, "all") == [b"1", b"2", b"3"]
    assert bodies(ch, "exact") == [b"1"]


def test_headers_all_and_any(ch: BlockingChannel) -> None:
    ch.exchange_declare("h", "headers")
    ch.queue_declare("h-all")
    ch.queue_bind("h-all", "h", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_declare("h-any")
    ch.queue_bind("h-any", "h", arguments={"x-match": "any", "format": "pdf", "type": "log"})
    for headers in ({"format": "pdf", "type": "report"}, {"format": "zip", "type": "log"},
                    {"format": "zip"}):
        ch.basic_publish("h", "", repr(headers).encode(), pika.BasicProperties(headers=headers))
    assert bodies(ch, "h-all") == [b"{'format': 'pdf', 'type': 'report'}"]
    assert bodies(ch, "h-any") == [b"{'format': 'pdf', 'type': 'report'}",
                                   b"{'format': 'zip', 'type': 'log'}"]


def test_headers_binding_rejects_bad_x_match(ch: BlockingChannel) -> None:
    ch.exchange_declare("h2", "headers")
    ch.queue_declare("hq")
    with pytest.raises(ChannelClosed, match=r"406.*Invalid x-match field value 'most'"):
        ch.queue_bind("hq", "h2", arguments={"x-match": "most"})


def test_exchange_to_exchange_bindings_with_a_cycle(ch: BlockingChannel) -> None:
    ch.exchange_declare("e1", "fanout")
    ch.exchange_declare("e2", "fanout")
    ch.exchange_bind("e2", "e1")
    ch.exchange_bind("e1", "e2")  # a cycle: every queue still gets one copy
    ch.queue_declare("behind-e2")
    ch.queue_bind("behind-e2", "e2")
    ch.basic_publish("e1", "", b"once")
    assert bodies(ch, "behind-e2") == [b"once"]
    ch.exchange_unbind("e2", "e1")
    ch.basic_publish("e1", "", b"not any more")
    assert bodies(ch, "behind-e2") == []


def test_alternate_exchange_catches_unroutable(ch: BlockingChannel) -> None:
    ch.exchange_declare("ae", "fanout")
    ch.queue_declare("unrouted")
    ch.queue_bind("unrouted", "ae")
    ch.exchange_declare("main", "direct", arguments={"alternate-exchange": "ae"})
    ch.basic_publish("main", "no-binding", b"caught")
    assert bodies(ch, "unrouted") == [b"caught"]


def test_internal_exchange_refuses_publishes(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("inner", "fanout", internal=True)
    ch.basic_publish("inner", "", b"x")
    with pytest.raises(ChannelClosed, match=r"403.*cannot publish to internal exchange 'inner'"):
        ch.exchange_declare("inner", "fanout", passive=True)


def test_auto_delete_exchange_goes_with_its_last_binding(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("ephemeral", "direct", auto_delete=True)
    ch.queue_declare("aq")
    ch.queue_bind("aq", "ephemeral", "k")
    ch.queue_unbind("aq", "ephemeral", "k")
    with pytest.raises(ChannelClosed, match=r"404.*no exchange 'ephemeral'"):
        ch.exchange_declare("ephemeral", "direct", passive=True)


@pytest.mark.parametrize(("declare", "pattern"), [
    ({"exchange": "missing", "passive": True}, "404.*no exchange 'missing' in vhost '/'"),
    ({"exchange": "amq.custom"}, "403.*reserved prefix 'amq.*'"),
    ({"exchange": "amq.direct", "exchange_type": "fanout"},
     "406.*inequivalent arg 'type' for exchange 'amq.direct'"),
])
def test_exchange_declare_errors(conn: pika.BlockingConnection, declare: dict[str, object],
                                 pattern: str) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosed, match=pattern):
        ch.exchange_declare(**declare)  # type: ignore[arg-type]
    assert conn.is_open


def test_exchange_redeclare_must_be_equivalent(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("eq", "topic", durable=True)
    ch.exchange_declare("eq", "topic", durable=True)
    with pytest.raises(ChannelClosed, match=r"406.*inequivalent arg 'durable'"):
        ch.exchange_declare("eq", "topic", durable=False)


def test_predeclared_exchanges_cannot_be_deleted(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)  # equivalent: allowed
    with pytest.raises(ChannelClosed, match=r"403"):
        ch.exchange_delete("amq.direct")


def test_unknown_exchange_type_closes_connection(conn: pika.BlockingConnection) -> None:
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker,
                       match=r"503.*unknown exchange type 'nonsense'"):
        conn.channel().exchange_declare("odd", "nonsense")


def test_binding_to_default_exchange_is_refused(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("q")
    with pytest.raises(ChannelClosed, match=r"403.*default exchange"):
        ch.queue_bind("q", "", "q")


def test_server_named_queue(ch: BlockingChannel) -> None:
    name = ch.queue_declare("", exclusive=True).method.queue
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", name)
    ch.basic_publish("", name, b"to me")
    assert bodies(ch, name) == [b"to me"]


def test_queue_declare_ok_counts(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("counts")
    for _ in range(3):
        ch.basic_publish("", "counts", b"x")
    ch.basic_get("counts")  # one unacked: not counted
    ch.basic_consume("counts", lambda *a: None, consumer_tag="c")
    conn.process_data_events(time_limit=0.2)
    ok = conn.channel().queue_declare("counts", passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 1)


def test_exclusive_queue_is_locked_and_dies_with_its_connection(broker_url: str) -> None:
    owner = pika.BlockingConnection(pika.URLParameters(broker_url))
    owner.channel().queue_declare("mine", exclusive=True)
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as other:
        with pytest.raises(ChannelClosed, match=r"405.*exclusive access to locked queue 'mine'"):
            other.channel().queue_declare("mine", passive=True)
        with pytest.raises(ChannelClosed, match=r"405"):
            other.channel().basic_get("mine")
        owner.close()
        with pytest.raises(ChannelClosed, match=r"404.*no queue 'mine'"):
            other.channel().queue_declare("mine", passive=True)


def test_auto_delete_queue_goes_with_its_last_consumer(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("fleeting", auto_delete=True)
    tag = ch.basic_consume("fleeting", lambda *a: None)
    assert ch.queue_declare("fleeting", passive=True).method.consumer_count == 1
    ch.basic_cancel(tag)
    with pytest.raises(ChannelClosed, match=r"404"):
        ch.queue_declare("fleeting", passive=True)


def test_purge_and_delete_report_counts(ch: BlockingChannel) -> None:
    ch.queue_declare("p")
    for _ in range(4):
        ch.basic_publish("", "p", b"x")
    assert ch.queue_purge("p").method.message_count == 4
    ch.basic_publish("", "p", b"y")
    assert ch.queue_delete("p").method.message_count == 1


def test_delete_if_unused_and_if_empty(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("busy")
    ch.basic_consume("busy", lambda *a: None)
    with pytest.raises(ChannelClosed, match=r"406.*queue 'busy' in vhost '/' in use"):
        conn.channel().queue_delete("busy", if_unused=True)
    ch2 = conn.channel()
    ch2.queue_declare("full")
    ch2.basic_publish("", "full", b"x")
    with pytest.raises(ChannelClosed, match=r"406.*queue 'full' in vhost '/' not empty"):
        ch2.queue_delete("full", if_empty=True)


def test_queue_redeclare_must_be_equivalent(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    ch.queue_declare("ttl", arguments={"x-message-ttl": 1000})
    ch.queue_declare("ttl", arguments={"x-message-ttl": 1000, "x-unknown": "ignored"})
    with pytest.raises(ChannelClosed, match=r"406.*inequivalent arg 'x-message-ttl'"):
        ch.queue_declare("ttl", arguments={"x-message-ttl": 2000})
    ch = conn.channel()
    with pytest.raises(ChannelClosed, match=r"406.*inequivalent arg 'durable'"):
        ch.queue_declare("ttl", durable=True, arguments={"x-message-ttl": 1000})


@pytest.mark.parametrize(("arguments", "pattern"), [
    ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl'.*value_negative"),
    ({"x-message-ttl": "abc"}, "invalid arg .+x-message-ttl.+expected integer, got longstr"),
    ({"x-max-priority": 256}, "invalid arg 'x-max-priority'"),
    ({"x-expires": 0}, "invalid arg 'x-expires'"),
    ({"x-overflow": "bogus"}, "invalid arg 'x-overflow'"),
    ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
])
def test_invalid_queue_arguments(conn: pika.BlockingConnection, arguments: dict[str, object],
                                 pattern: str) -> None:
    with pytest.raises(ChannelClosed, match=r"406.*" + pattern):
        conn.channel().queue_declare("args", arguments=arguments)


def test_reserved_queue_prefix(conn: pika.BlockingConnection) -> None:
    with pytest.raises(ChannelClosed, match=r"403.*queue name 'amq.q' contains reserved prefix"):
        conn.channel().queue_declare("amq.q")


def test_unicode_and_long_names(ch: BlockingChannel) -> None:
    name = "ünïcode-" + "x" * 200
    ch.exchange_declare(name, "direct")
    ch.queue_declare(name)
    ch.queue_bind(name, name, "k")
    ch.basic_publish(name, "k", b"found")
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert (method.exchange, body) == (name, b"found")


def test_a_publish_follows_an_exchange_redeclared_under_the_same_name(
    ch: BlockingChannel,
) -> None:
    """A channel remembers what a Basic.Publish resolved to only while that exchange stands."""
    for queue in ("first", "second"):
        ch.queue_declare(queue)
    ch.exchange_declare("swap", "fanout")
    ch.queue_bind("first", "swap")
    ch.basic_publish("swap", "k", b"1")
    ch.exchange_delete("swap")
    ch.exchange_declare("swap", "direct")
    ch.queue_bind("second", "swap", "k")
    ch.basic_publish("swap", "k", b"2")  # the same method frame as before
    assert [body for _, _, body in [ch.basic_get("first", auto_ack=True)]] == [b"1"]
    assert ch.basic_get("first", auto_ack=True)[0] is None
    assert ch.basic_get("second", auto_ack=True)[2] == b"2"
    ch.exchange_delete("swap")
    ch.basic_publish("swap", "k", b"3")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.basic_get("second")
    assert closed.value.reply_code == 404
