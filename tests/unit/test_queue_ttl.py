"""Unit tests for expiry in leveret.core.queue.Queue: a queue-wide TTL (checked at the head),
per-message TTLs (expiring wherever the entry sits), TTL 0 (delivered at once or not at all),
and the bookkeeping of entries that expire inside the store (message_count, compaction).

The queue and its memory store are the real ones; dead letters are recorded by
`RecordingHost`, a QueueHost double. Async tests give the Scheduler a running loop; the one
sync test relies on the timers staying dormant outside a loop. Times are real and short.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from leveret.core.message import Message
from leveret.core.vhost import VHost
from leveret.store.memory import MemoryQueueStore
from tests.unit.doubles import RecordingChannel
from tests.unit.queue_helpers import DLX, RecordingHost, attach, drain, make_queue, message

# -- TTL ---------------------------------------------------------------------------------


async def test_queue_ttl_dead_letters_expired_heads_in_order() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-message-ttl": 20}, **DLX)
    for body in ("1", "2", "3"):
        queue.publish(message(body))
    assert queue.message_count == 3
    await asyncio.sleep(0.08)
    assert host.dead == [(b"1", "expired"), (b"2", "expired"), (b"3", "expired")]
    assert queue.message_count == 0
    assert queue.get() is None


async def test_queue_ttl_without_dead_letter_exchange_drops_silently() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-message-ttl": 10})
    queue.publish(message("1"))
    await asyncio.sleep(0.05)
    assert (host.dead, queue.message_count) == ([], 0)


def test_queue_ttl_is_checked_when_an_entry_is_taken() -> None:
    host = RecordingHost()  # outside a loop the timers stay dormant: only get() expires
    queue = make_queue(host, **{"x-message-ttl": 10}, **DLX)
    queue.publish(message("old"))
    time.sleep(0.02)
    queue.publish(message("new"))
    assert drain(queue) == [b"new"]
    assert host.dead == [(b"old", "expired")]


async def test_per_message_ttl_expires_deep_in_the_queue() -> None:
    host = RecordingHost()
    queue = make_queue(host, **DLX)
    queue.publish(message("long", expiration=10_000))
    queue.publish(message("short", expiration=20))
    queue.publish(message("forever"))
    await asyncio.sleep(0.08)
    assert host.dead == [(b"short", "expired")]
    assert queue.message_count == 2
    assert drain(queue) == [b"long", b"forever"]


async def test_ttl_zero_expires_when_no_consumer_can_take_it() -> None:
    host, channel = RecordingHost(), RecordingChannel()
    queue = make_queue(host, **{"x-message-ttl": 0}, **DLX)
    channel.accepting = False
    attach(queue, channel, "c")
    queue.publish(message("missed"))
    assert host.dead == [(b"missed", "expired")]
    assert queue.message_count == 0
    channel.accepting = True
    queue.dispatch()
    assert channel.bodies() == []


async def test_per_message_ttl_zero_expires_without_a_consumer() -> None:
    host = RecordingHost()
    queue = make_queue(host, **DLX)
    queue.publish(message("now-or-never", expiration=0))
    queue.publish(message("kept"))
    assert host.dead == [(b"now-or-never", "expired")]
    assert queue.message_count == 1
    assert drain(queue) == [b"kept"]


@pytest.mark.parametrize(("arguments", "expiration"), [
    pytest.param({"x-message-ttl": 0}, None, id="queue-ttl-0"),
    pytest.param({}, 0, id="message-expiration-0"),
])
async def test_ttl_zero_is_delivered_to_a_waiting_consumer(arguments: dict[str, Any],
                                                           expiration: int | None) -> None:
    # Regression (fixed): Queue._take found a TTL-0 entry expired (deadline <= now) on
    # the dispatch inside publish, so it is dead-lettered instead of delivered; publish then
    # expires it "in place" a second time (queue.py:226-228): two dead letters and a
    # message_count of -1. RabbitMQ delivers to a waiting consumer before any expiry check.
    host, channel = RecordingHost(), RecordingChannel()
    queue = make_queue(host, **arguments, **DLX)
    attach(queue, channel, "c")
    queue.publish(message("taken", expiration=expiration))
    assert (channel.bodies(), host.dead) == ([b"taken"], [])
    assert (queue.message_count, queue.unacked_count) == (0, 1)


async def test_message_count_excludes_entries_that_expired_in_the_store() -> None:
    host, store = RecordingHost(), MemoryQueueStore()
    queue = make_queue(host, store, **DLX)
    queue.publish(message("head"))
    queue.publish(message("expiring", expiration=10))
    await asyncio.sleep(0.05)
    assert len(store) == 2  # still there, marked dead, until reached
    assert queue.message_count == 1
    assert drain(queue) == [b"head"]
    assert queue.message_count == 0


async def test_many_expiries_in_place_compact_the_store() -> None:
    host, store = RecordingHost(), MemoryQueueStore()
    queue = make_queue(host, store, **DLX)
    queue.publish(message("head"))
    for i in range(1100):
        queue.publish(message(f"e{i}", expiration=20))
    queue.publish(message("tail"))
    await asyncio.sleep(0.1)
    assert len(host.dead) == 1100
    assert queue.message_count == 2
    assert len(store) < 1100  # the dead were dropped from the store, not only skipped
    assert drain(queue) == [b"head", b"tail"]
    assert queue.message_count == 0


# -- an entry that left the store dies once ----------------------------------------------
#
# Regression (fixed, `_on_ttl_heap`): an entry with a TTL of its own stays in the
# TTL heap until its deadline. Only `_hand_over` (entry.delivered) and `_expire_in_place`
# (entry.dead) mark an entry that left the store; every other way out -- the drop-head of a
# length limit, the queue-wide TTL at the head or when taken, the delivery limit on requeue
# -- settles and dead-letters it but leaves both flags False. When its own deadline comes,
# `_on_ttl_heap` takes it for a live entry and `_expire_in_place` runs: a second dead letter
# (reason expired) and `_dead` += 1 for an entry that is not in the store, so message_count
# drops below the real count (to -1 on an empty queue) and `_bytes` goes wrong too.


async def test_entry_dropped_by_max_length_does_not_expire_later() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-max-length": 1}, **DLX)
    queue.publish(message("dropped", expiration=20))
    queue.publish(message("kept"))
    assert host.dead == [(b"dropped", "maxlen")]
    await asyncio.sleep(0.07)
    assert host.dead == [(b"dropped", "maxlen")]
    assert queue.message_count == 1
    assert drain(queue) == [b"kept"]


async def test_entry_expired_by_queue_ttl_does_not_expire_again_by_its_own() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-message-ttl": 10}, **DLX)
    queue.publish(message("m", expiration=40))
    await asyncio.sleep(0.1)
    assert host.dead == [(b"m", "expired")]
    assert queue.message_count == 0


async def test_entry_found_expired_when_taken_is_dead_lettered_once() -> None:
    host = RecordingHost()
    queue = make_queue(host, **DLX)
    queue.publish(message("m", expiration=10))
    time.sleep(0.03)  # blocks the loop: get() reaches the entry before the TTL timer does
    assert queue.get() is None
    assert host.dead == [(b"m", "expired")]
    await asyncio.sleep(0.03)
    assert host.dead == [(b"m", "expired")]
    assert queue.message_count == 0


async def test_entry_over_its_delivery_limit_does_not_expire_later() -> None:
    host = RecordingHost()
    queue = make_queue(host, **{"x-delivery-limit": 0}, **DLX)
    queue.publish(message("m", expiration=30))
    entry = queue.get()
    assert entry is not None
    queue.requeue([(entry, None)])
    assert host.dead == [(b"m", "delivery_limit")]
    await asyncio.sleep(0.08)
    assert host.dead == [(b"m", "delivery_limit")]
    assert queue.message_count == 0


async def test_undecodable_headers_do_not_stop_expiry_elsewhere() -> None:
    # Regression (fixed), via a real VHost: publish only measures the headers table, so a message
    # whose table does not decode is accepted (a `PropertiesError` waits in Message.headers).
    # When it expires in a queue with a dead-letter exchange, VHost.dead_letter
    # calls dead_letter_copy -> deadletter.deaths -> message.headers,
    # which raises inside the Scheduler callback; the Scheduler then stalls (see
    # test_timers.test_a_callback_that_raises_does_not_stall_the_other_timers), so another
    # queue's messages never expire.
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: None)
    vhost = VHost("/")
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("parked")
    vhost.bind_queue("parked", "dlx", "")
    for name, ttl in (("bad", 10), ("good", 30)):
        vhost.declare_queue(name, arguments={"x-message-ttl": ttl, **DLX})
    undecodable = b"\x20\x00" + b"\x00\x00\x00\x03" + b"\x01a?"  # a value of unknown type '?'
    vhost.queues["bad"].publish(Message.from_wire("", "bad", undecodable, b"poison"))
    vhost.queues["good"].publish(Message.from_wire("", "good", b"\x00\x00", b"innocent"))
    try:
        await asyncio.sleep(0.12)
    finally:
        loop.set_exception_handler(None)
    assert vhost.queues["good"].message_count == 0
    assert b"innocent" in drain(vhost.queues["parked"])
