"""Unit tests for what a queue's arguments ask of leveret.core.queue.Queue: length limits and
overflow, delivery limits, single active consumer, deduplication and x-expires. TTL has its own
module, test_queue_ttl.

The queue and its memory store are the real ones. Its vhost is `RecordingHost`, a small
implementation of the QueueHost protocol that records dead letters and unused-queue reports;
consumers live on a `RecordingChannel`. Tests that need timers are async: the Scheduler arms
its loop timer only inside a running event loop. Times are real and short.
"""

from __future__ import annotations

import asyncio

import pytest

from leveret.core.message import HEADERS, Entry, Message, build_properties
from leveret.core.queue import Queue
from leveret.core.tables import build_table
from tests.unit.doubles import RecordingChannel
from tests.unit.queue_helpers import DLX, RecordingHost, attach, drain, make_queue, message

# -- length limits -------------------------------------------------------------------------


@pytest.mark.parametrize(("overflow", "accepted", "ready", "dead"), [
    pytest.param("drop-head", True, [b"2", b"3"], [(b"1", "maxlen")], id="drop-head"),
    pytest.param("reject-publish", False, [b"1", b"2"], [], id="reject-publish"),
    pytest.param("reject-publish-dlx", False, [b"1", b"2"], [(b"3", "maxlen")],
                 id="reject-publish-dlx"),
])
def test_max_length_overflow(overflow: str, accepted: bool, ready: list[bytes],
                             dead: list[tuple[bytes, str]]) -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-max-length": 2, "x-overflow": overflow}, **DLX)
    assert queue.publish(message("1")) and queue.publish(message("2"))
    assert queue.publish(message("3")) is accepted
    assert queue.message_count == 2
    assert host.dead == dead
    assert drain(queue) == ready


def test_max_length_bytes_drops_heads_until_the_bodies_fit() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-max-length-bytes": 10}, **DLX)
    for body in ("aaaa", "bbbb", "cc"):
        queue.publish(message(body))
    assert host.dead == []  # exactly 10 bytes
    queue.publish(message("dddddd"))
    assert host.dead == [(b"aaaa", "maxlen"), (b"bbbb", "maxlen")]
    assert drain(queue) == [b"cc", b"dddddd"]


def test_max_length_bytes_with_reject_publish_refuses_what_does_not_fit() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    assert queue.publish(message("12345678"))
    assert not queue.publish(message("123"))
    assert queue.publish(message("12"))
    assert drain(queue) == [b"12345678", b"12"]


# -- delivery limit --------------------------------------------------------------------------


def _delivery_count(queue: Queue, entry: Entry) -> object:
    properties = queue.delivery_properties(entry)
    return Message.from_wire("", "q", properties, b"").headers.get("x-delivery-count")


def test_delivery_limit_counts_returns_then_dead_letters() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-delivery-limit": 2}, **DLX)
    queue.publish(message("m"))
    counts = []
    for _ in range(3):
        entry = queue.get()
        assert entry is not None
        counts.append((entry.delivery_count, _delivery_count(queue, entry), entry.redelivered))
        queue.requeue([(entry, None)])
    assert counts == [(0, 0, False), (1, 1, True), (2, 2, True)]
    assert host.dead == [(b"m", "delivery_limit")]
    assert (queue.message_count, queue.unacked_count) == (0, 0)


def test_x_delivery_count_is_a_long_added_to_the_publishers_headers() -> None:
    queue = Queue("q")  # no delivery limit: the header appears once the message came back
    original = Message.from_wire("", "q", build_properties(
        {HEADERS: build_table([("app", b"b\x05")])}), b"m")
    queue.publish(original)
    entry = queue.get()
    assert entry is not None
    assert queue.delivery_properties(entry) == original.properties
    queue.requeue([(entry, None)])
    entry = queue.get()
    assert entry is not None
    properties = queue.delivery_properties(entry)
    delivered = Message.from_wire("", "q", properties, b"")
    assert delivered.headers == {"x-delivery-count": 1, "app": 5}
    assert b"\x10x-delivery-countl" + (1).to_bytes(8, "big") in properties
    assert b"\x03appb\x05" in properties  # the publisher's int8 is not re-encoded


# -- consumers -------------------------------------------------------------------------------


def test_single_active_consumer_gets_everything_and_fails_over_on_remove() -> None:
    queue, channel = make_queue(RecordingHost(), **{"x-single-active-consumer": True}), \
        RecordingChannel()
    first = attach(queue, channel, "first")
    attach(queue, channel, "second")
    for body in ("1", "2", "3"):
        queue.publish(message(body))
    assert channel.tags() == ["first"] * 3
    assert queue.active_consumer is first
    held = [(entry, first) for _, _, entry in channel.deliveries]
    channel.deliveries.clear()
    queue.remove_consumer(first)
    queue.requeue(held)
    queue.dispatch()
    queue.publish(message("4"))
    assert channel.tags() == ["second"] * 4
    assert channel.bodies() == [b"1", b"2", b"3", b"4"]


# -- deduplication ---------------------------------------------------------------------------


def test_duplicate_is_accepted_but_not_enqueued() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-message-deduplication": True})
    assert queue.publish(message("first", dedup="id-1"))
    assert queue.publish(message("again", dedup="id-1")) is True
    assert queue.publish(message("other", dedup="id-2"))
    assert queue.message_count == 2
    assert drain(queue) == [b"first", b"other"]  # settled: the identities may come again
    assert queue.publish(message("later", dedup="id-1"))
    assert drain(queue) == [b"later"]


# -- x-expires ---------------------------------------------------------------------------------


async def test_unused_queue_is_reported_after_x_expires() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-expires": 20})
    await asyncio.sleep(0.06)
    assert host.unused == ["q"]
    assert queue.message_count == 0


async def test_a_consumer_keeps_the_queue_in_use() -> None:
    host, channel = RecordingHost(), RecordingChannel()
    queue = make_queue(host, **{"x-expires": 20})
    consumer = attach(queue, channel, "c")
    await asyncio.sleep(0.06)
    assert host.unused == []
    queue.remove_consumer(consumer)  # the clock starts again from here
    await asyncio.sleep(0.06)
    assert host.unused == ["q"]


async def test_a_deleted_queue_is_never_reported_unused() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-expires": 20})
    queue.delete()
    await asyncio.sleep(0.05)
    assert host.unused == []


# -- bugs ----------------------------------------------------------------------------------


def test_max_length_zero_still_delivers_to_a_waiting_consumer() -> None:
    # Regression (fixed, publish): the entry is pushed and `_drop_heads_over_limit`
    # runs before `dispatch`, so with drop-head a message that a waiting consumer could take
    # at once is dead-lettered (maxlen) when it alone exceeds the limit. RabbitMQ
    # (rabbit_amqqueue_process:deliver_or_enqueue) attempts delivery first and only enqueues,
    # then drops heads, what no consumer took: x-max-length 0 is "only to live consumers".
    host, channel = RecordingHost(), RecordingChannel()
    queue = make_queue(host, **{"x-max-length": 0}, **DLX)
    attach(queue, channel, "c")
    assert queue.publish(message("m"))
    assert (channel.bodies(), host.dead) == ([b"m"], [])


def test_identity_of_a_message_refused_by_a_full_queue_is_not_remembered() -> None:
    # Regression (fixed, publish): `DedupCache.is_duplicate` remembers the identity
    # before `_admit` refuses the message (x-overflow reject-publish), and nothing forgets it.
    # The publisher is nacked and retries once there is room; the retry is then taken for a
    # duplicate, acked and dropped: the message is lost. Without x-cache-ttl an identity
    # should be held only while a message carrying it is in the queue.
    host = RecordingHost()
    queue = make_queue(host, **{"x-message-deduplication": True, "x-max-length": 1,
                                "x-overflow": "reject-publish"})
    assert queue.publish(message("first", dedup="a"))
    assert not queue.publish(message("refused", dedup="b"))
    assert drain(queue) == [b"first"]
    assert queue.publish(message("retried", dedup="b"))
    assert drain(queue) == [b"retried"]
