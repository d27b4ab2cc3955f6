"""Unit tests for leveret.core.vhost: declare, delete, bind and route, with RabbitMQ's errors.

Reply codes and texts are checked against RabbitMQ's (rabbit_channel.erl, rabbit_amqqueue.erl)
because users search for those strings. Real queues, exchanges and messages; the only double
is `RecordingChannel`, an implementation of the ConsumerChannel protocol.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from leveret.core.message import Message
from leveret.core.queue import Consumer
from leveret.core.vhost import VHost
from leveret.errors import (
    AccessRefused,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from tests.unit.doubles import RecordingChannel


@pytest.fixture
def vhost() -> VHost:
    return VHost("/")


def _msg(routing_key: str = "k") -> Message:
    return Message.from_wire("ex", routing_key, b"\x00\x00", b"body")


def _routed(vhost: VHost, exchange: str, routing_key: str = "k") -> list[str]:
    queues = vhost.route(vhost.get_exchange(exchange), _msg(routing_key))
    assert len(queues) == len({id(q) for q in queues}), "a queue was routed to twice"
    return sorted(q.name for q in queues)


# -- queues: declare, passive, equivalence -------------------------------------------------


def test_declare_queue_then_redeclare_returns_the_same_queue(vhost: VHost) -> None:
    queue = vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 1000})
    assert vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 1000}) is queue
    assert vhost.declare_queue("q", passive=True) is queue
    assert vhost.find_queue("q") is queue
    assert vhost.find_queue("other") is None


def test_passive_declare_of_a_missing_queue(vhost: VHost) -> None:
    with pytest.raises(NotFound, match=r"^no queue 'missing' in vhost '/'$") as caught:
        vhost.declare_queue("missing", passive=True)
    assert caught.value.reply_code == 404
    assert caught.value.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        ({"durable": False}, {"durable": True},
         "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current "
         "is 'false'"),
        ({"auto_delete": True}, {"auto_delete": False},
         "inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'false' but "
         "current is 'true'"),
        ({"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": 2000}},
         "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but "
         "current is '1000'"),
        ({"arguments": {"x-max-length": 5}}, {},
         "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but "
         "current is the value '5' of type 'signedint'"),
        ({"arguments": {"x-single-active-consumer": True}},
         {"arguments": {"x-single-active-consumer": 1}},
         "inequivalent arg 'x-single-active-consumer'"),
    ],
)
def test_redeclare_with_different_properties(
    vhost: VHost, first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    vhost.declare_queue("q", **first)
    with pytest.raises(PreconditionFailed, match=re.escape(text)) as caught:
        vhost.declare_queue("q", **second)
    assert caught.value.reply_code == 406


def test_redeclare_ignores_unknown_arguments_and_classic_type(vhost: VHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-custom": 1})
    assert vhost.declare_queue("q", arguments={"x-custom": 2}) is queue
    assert vhost.declare_queue("q", arguments={"x-queue-type": "classic"}) is queue


def test_server_named_queues(vhost: VHost) -> None:
    first, second = vhost.declare_queue(""), vhost.declare_queue("")
    for queue in (first, second):
        assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", queue.name), queue.name
        assert vhost.find_queue(queue.name) is queue
    assert first.name != second.name


def test_reserved_prefix_for_queues(vhost: VHost) -> None:
    with pytest.raises(AccessRefused, match="^queue name 'amq.q' contains reserved prefix "
                                            r"'amq\.\*'$") as caught:
        vhost.declare_queue("amq.q")
    assert caught.value.reply_code == 403


# -- exclusive queues ------------------------------------------------------------------------


def test_exclusive_queue_is_locked_to_its_owner(vhost: VHost) -> None:
    owner, other = object(), object()
    queue = vhost.declare_queue("ex", owner, exclusive=True)
    assert vhost.declare_queue("ex", owner, exclusive=True) is queue
    assert vhost.get_queue("ex", owner) is queue
    locked = "cannot obtain exclusive access to locked queue 'ex' in vhost '/'"
    attempts = [
        lambda: vhost.declare_queue("ex", other, exclusive=True),
        lambda: vhost.declare_queue("ex", other),
        lambda: vhost.declare_queue("ex", other, passive=True),
        lambda: vhost.get_queue("ex", other),
        lambda: vhost.bind_queue("ex", "amq.direct", "k", owner=other),
        lambda: vhost.purge_queue("ex", other),
        lambda: vhost.delete_queue("ex", other),
    ]
    for attempt in attempts:
        with pytest.raises(ResourceLocked, match=re.escape(locked)) as caught:
            attempt()
        assert caught.value.reply_code == 405
    assert vhost.find_queue("ex") is queue


def test_exclusive_queue_ignores_durable_on_redeclare(vhost: VHost) -> None:
    owner = object()
    queue = vhost.declare_queue("ex", owner, exclusive=True, durable=False)
    assert vhost.declare_queue("ex", owner, exclusive=True, durable=True) is queue


def test_owner_closed_deletes_its_exclusive_queues_only(vhost: VHost) -> None:
    owner = object()
    vhost.declare_queue("mine", owner, exclusive=True)
    vhost.declare_queue("shared", owner)
    vhost.bind_queue("mine", "amq.fanout", "", owner=owner)
    vhost.owner_closed(owner)
    assert vhost.find_queue("mine") is None
    assert vhost.find_queue("shared") is not None
    assert _routed(vhost, "amq.fanout") == []


# -- exchanges -------------------------------------------------------------------------------


def test_declare_exchange_and_equivalence(vhost: VHost) -> None:
    exchange = vhost.declare_exchange("e", "direct", durable=True)
    assert vhost.declare_exchange("e", "direct", durable=True) is exchange
    assert vhost.declare_exchange("e", "fanout", passive=True) is exchange
    with pytest.raises(PreconditionFailed, match=re.escape(
        "inequivalent arg 'type' for exchange 'e' in vhost '/': received 'fanout' but current "
        "is 'direct'"
    )):
        vhost.declare_exchange("e", "fanout", durable=True)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable' for exchange 'e'"):
        vhost.declare_exchange("e", "direct")
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'alternate-exchange'"):
        vhost.declare_exchange("e", "direct", durable=True,
                               arguments={"alternate-exchange": "ae"})


def test_declare_exchange_errors(vhost: VHost) -> None:
    with pytest.raises(NotFound, match=r"^no exchange 'nope' in vhost '/'$"):
        vhost.declare_exchange("nope", "direct", passive=True)
    with pytest.raises(CommandInvalid, match=r"^unknown exchange type 'nosuch'$") as invalid:
        vhost.declare_exchange("e", "nosuch")
    assert invalid.value.reply_code == 503
    with pytest.raises(AccessRefused, match="operation not permitted on the default exchange"):
        vhost.declare_exchange("", "direct")
    with pytest.raises(AccessRefused, match=r"exchange name 'amq.mine' contains reserved "
                                            r"prefix 'amq\.\*'"):
        vhost.declare_exchange("amq.mine", "direct")


def test_predeclared_exchanges_can_be_redeclared_and_passively_checked(vhost: VHost) -> None:
    assert vhost.declare_exchange("amq.direct", "direct", durable=True).name == "amq.direct"
    with pytest.raises(AccessRefused, match="operation not permitted on the default exchange"):
        vhost.declare_exchange("", "", passive=True)  # as RabbitMQ 3.10 answers (probed)
    assert vhost.get_exchange("amq.headers").type_name == "headers"
    assert vhost.get_exchange("amq.match").type_name == "headers"


def test_default_exchange_cannot_be_deleted(vhost: VHost) -> None:
    # rabbit_channel:check_not_default_exchange/1
    with pytest.raises(AccessRefused, match=r"^operation not permitted on the default exchange$"):
        vhost.delete_exchange("")


def test_predeclared_exchanges_cannot_be_deleted(vhost: VHost) -> None:
    # rabbit_channel:check_exchange_deletion/1
    with pytest.raises(AccessRefused, match=re.escape(
        "deletion of system exchange 'amq.direct' in vhost '/' not allowed"
    )) as caught:
        vhost.delete_exchange("amq.direct")
    assert caught.value.reply_code == 403


def test_delete_missing_exchange_is_a_no_op(vhost: VHost) -> None:
    # RabbitMQ answers exchange.delete-ok for an exchange that does not exist
    # (rabbit_channel: `{error, not_found} -> ok`), as it does for queue.delete.
    vhost.delete_exchange("never-declared")
    assert vhost.find_exchange("never-declared") is None


def test_delete_exchange_if_unused(vhost: VHost) -> None:
    vhost.declare_exchange("e", "direct")
    vhost.declare_queue("q")
    vhost.bind_queue("q", "e", "k")
    with pytest.raises(PreconditionFailed, match=r"^exchange 'e' in vhost '/' in use$"):
        vhost.delete_exchange("e", if_unused=True)
    vhost.delete_exchange("e")
    assert vhost.find_exchange("e") is None
    vhost.delete_queue("q")  # the queue's reverse index no longer names the exchange


# -- bindings and routing --------------------------------------------------------------------


def test_bind_and_unbind_queue(vhost: VHost) -> None:
    vhost.declare_queue("q")
    vhost.bind_queue("q", "amq.direct", "k")
    vhost.bind_queue("q", "amq.direct", "k")  # idempotent
    assert _routed(vhost, "amq.direct") == ["q"]
    vhost.unbind_queue("q", "amq.direct", "k")
    assert _routed(vhost, "amq.direct") == []
    vhost.unbind_queue("q", "amq.direct", "k")  # unbinding nothing is fine, as in RabbitMQ


def test_bind_errors(vhost: VHost) -> None:
    vhost.declare_queue("q")
    with pytest.raises(NotFound, match="no exchange 'nope' in vhost '/'"):
        vhost.bind_queue("q", "nope", "k")
    with pytest.raises(NotFound, match="no queue 'nope' in vhost '/'"):
        vhost.bind_queue("nope", "amq.direct", "k")
    with pytest.raises(AccessRefused, match="operation not permitted on the default exchange"):
        vhost.bind_queue("q", "", "q")
    with pytest.raises(PreconditionFailed, match="Invalid x-match field value 'one'"):
        vhost.bind_queue("q", "amq.headers", "", {"x-match": "one"})


def test_default_exchange_routes_to_queue_by_name(vhost: VHost) -> None:
    vhost.declare_queue("jobs")
    assert _routed(vhost, "", "jobs") == ["jobs"]
    assert _routed(vhost, "", "nothing") == []


def test_exchange_to_exchange_cycle_terminates_and_routes_once(vhost: VHost) -> None:
    for name in ("e1", "e2", "e3"):
        vhost.declare_exchange(name, "fanout")
    for queue in ("q1", "q2", "q3"):
        vhost.declare_queue(queue)
    vhost.bind_exchange("e2", "e1", "")
    vhost.bind_exchange("e3", "e2", "")
    vhost.bind_exchange("e1", "e3", "")  # closes the cycle e1 -> e2 -> e3 -> e1
    vhost.bind_exchange("e3", "e1", "")  # and a second path to e3
    vhost.bind_queue("q1", "e1", "")
    vhost.bind_queue("q2", "e2", "")
    vhost.bind_queue("q3", "e3", "")
    vhost.bind_queue("q3", "e2", "")
    for start in ("e1", "e2", "e3"):
        assert _routed(vhost, start) == ["q1", "q2", "q3"]


def test_unbind_exchange(vhost: VHost) -> None:
    vhost.declare_exchange("src", "topic")
    vhost.declare_exchange("dst", "fanout")
    vhost.declare_queue("q")
    vhost.bind_queue("q", "dst", "")
    vhost.bind_exchange("dst", "src", "a.*")
    assert _routed(vhost, "src", "a.b") == ["q"]
    assert _routed(vhost, "src", "b.b") == []
    vhost.unbind_exchange("dst", "src", "a.*")
    assert _routed(vhost, "src", "a.b") == []
    with pytest.raises(NotFound, match="no exchange 'gone'"):
        vhost.bind_exchange("gone", "src", "")


def test_alternate_exchange(vhost: VHost) -> None:
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    for queue in ("bound", "unrouted"):
        vhost.declare_queue(queue)
    vhost.bind_queue("bound", "main", "known")
    vhost.bind_queue("unrouted", "ae", "")
    assert _routed(vhost, "main", "known") == ["bound"]
    assert _routed(vhost, "main", "other") == ["unrouted"]


def test_alternate_exchange_missing_or_cyclic(vhost: VHost) -> None:
    vhost.declare_exchange("lonely", "direct", arguments={"alternate-exchange": "absent"})
    assert _routed(vhost, "lonely") == []
    vhost.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    vhost.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    assert _routed(vhost, "a") == []


def test_auto_delete_exchange_goes_with_its_last_binding(vhost: VHost) -> None:
    vhost.declare_exchange("ad", "direct", auto_delete=True)
    vhost.declare_queue("q")
    assert vhost.find_exchange("ad") is not None  # never bound: kept
    vhost.bind_queue("q", "ad", "a")
    vhost.bind_queue("q", "ad", "b")
    vhost.unbind_queue("q", "ad", "a")
    assert vhost.find_exchange("ad") is not None
    vhost.unbind_queue("q", "ad", "b")
    assert vhost.find_exchange("ad") is None


def test_auto_delete_exchange_goes_when_its_queue_is_deleted(vhost: VHost) -> None:
    source = vhost.declare_exchange("ad", "fanout", auto_delete=True)
    vhost.declare_queue("q")
    vhost.bind_queue("q", "ad", "")
    vhost.delete_queue("q")
    assert vhost.find_exchange("ad") is None
    assert source.deleted


def test_deleting_an_exchange_removes_bindings_to_it(vhost: VHost) -> None:
    vhost.declare_exchange("src", "fanout")
    vhost.declare_exchange("mid", "fanout")
    vhost.declare_queue("q")
    vhost.bind_exchange("mid", "src", "")
    vhost.bind_queue("q", "mid", "")
    assert _routed(vhost, "src") == ["q"]
    vhost.delete_exchange("mid")
    assert not vhost.get_exchange("src").has_bindings


# -- queue delete ----------------------------------------------------------------------------


def test_delete_queue_if_unused(vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Consumer("ctag", queue, RecordingChannel())
    vhost.add_consumer(consumer)
    with pytest.raises(PreconditionFailed, match=r"^queue 'q' in vhost '/' in use$") as caught:
        vhost.delete_queue("q", if_unused=True)
    assert caught.value.reply_code == 406
    vhost.remove_consumer(consumer)
    queue.publish(_msg())
    queue.publish(_msg())
    assert vhost.delete_queue("q", if_unused=True) == 2  # the ready count
    assert vhost.find_queue("q") is None
    assert vhost.delete_queue("q") == 0  # already gone: delete-ok with 0, as RabbitMQ


def test_delete_queue_if_empty(vhost: VHost) -> None:
    vhost.declare_queue("q").publish(_msg())
    # rabbit_amqqueue: precondition_failed("~ts not empty", [rabbit_misc:rs(QueueName)])
    with pytest.raises(PreconditionFailed, match=r"^queue 'q' in vhost '/' not empty$"):
        vhost.delete_queue("q", if_empty=True)
    assert vhost.find_queue("q") is not None


def test_delete_queue_cancels_its_consumers_and_unbinds_it(vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    vhost.bind_queue("q", "amq.fanout", "")
    channel = RecordingChannel()
    vhost.add_consumer(Consumer("c1", queue, channel))
    vhost.add_consumer(Consumer("c2", queue, channel))
    vhost.delete_queue("q")
    assert channel.cancelled == ["c1", "c2"]
    assert queue.deleted
    assert _routed(vhost, "amq.fanout") == []


def test_exclusive_consumer_conflicts(vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    channel = RecordingChannel()
    vhost.add_consumer(Consumer("first", queue, channel))
    with pytest.raises(AccessRefused, match=r"^queue 'q' in vhost '/' in exclusive use$"):
        vhost.add_consumer(Consumer("greedy", queue, channel, exclusive=True))
    other = vhost.declare_queue("other")
    vhost.add_consumer(Consumer("sole", other, channel, exclusive=True))
    with pytest.raises(AccessRefused, match="in exclusive use"):
        vhost.add_consumer(Consumer("second", other, channel))


def test_auto_delete_queue_goes_with_its_last_consumer(vhost: VHost) -> None:
    queue = vhost.declare_queue("ad", auto_delete=True)
    channel = RecordingChannel()
    first, second = Consumer("c1", queue, channel), Consumer("c2", queue, channel)
    vhost.add_consumer(first)
    vhost.add_consumer(second)
    vhost.remove_consumer(first)
    assert vhost.find_queue("ad") is queue
    vhost.remove_consumers([second])
    assert vhost.find_queue("ad") is None
    assert channel.cancelled == []  # removed by the client, not cancelled by the broker
