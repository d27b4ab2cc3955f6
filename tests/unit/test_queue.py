"""Unit tests for leveret.core.queue: FIFO order, round-robin dispatch, prefetch and requeue.

Consumers live on a `RecordingChannel`, a small implementation of the ConsumerChannel
protocol that records deliveries; the queue and its memory store are the real ones.
"""

from __future__ import annotations

from typing import Any

from leveret.core.message import Message
from leveret.core.queue import Consumer, Queue
from tests.unit.doubles import RecordingChannel


def _publish(queue: Queue, *bodies: str) -> None:
    for body in bodies:
        queue.publish(Message("", queue.name, b"\x00\x00", body.encode()))


def _ready(queue: Queue) -> list[tuple[bytes, bool]]:
    """Drain the ready entries with basic.get: (body, redelivered) in delivery order."""
    out = []
    while (entry := queue.get()) is not None:
        out.append((entry.message.body, entry.redelivered))
    return out


def _attach(queue: Queue, channel: RecordingChannel, tag: str, **options: Any) -> Consumer:
    consumer = Consumer(tag, queue, channel, **options)
    queue.add_consumer(consumer)
    queue.dispatch()
    return consumer


def test_fifo_order_and_counts() -> None:
    queue = Queue("q")
    _publish(queue, "1", "2", "3")
    assert queue.message_count == 3
    first = queue.get()
    assert first is not None and first.message.body == b"1"
    assert (queue.message_count, queue.unacked_count) == (2, 1)
    queue.settle(first, None)
    assert queue.unacked_count == 0
    assert _ready(queue) == [(b"2", False), (b"3", False)]
    assert queue.get() is None


def test_round_robin_across_consumers() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    for tag in ("a", "b", "c"):
        _attach(queue, channel, tag)
    _publish(queue, *"123456")
    assert channel.tags() == ["a", "b", "c", "a", "b", "c"]
    assert channel.bodies("b") == [b"2", b"5"]
    assert (queue.message_count, queue.unacked_count) == (0, 6)


def test_messages_published_before_consumers_are_shared_out() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    _publish(queue, *"1234")
    _attach(queue, channel, "a", prefetch=1)
    _attach(queue, channel, "b", prefetch=1)
    assert channel.bodies("a") == [b"1"]
    assert channel.bodies("b") == [b"2"]
    assert queue.message_count == 2


def test_prefetch_limits_unacked_deliveries_per_consumer() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    one = _attach(queue, channel, "one", prefetch=1)
    two = _attach(queue, channel, "two", prefetch=2)
    _publish(queue, *"12345")
    assert channel.bodies("one") == [b"1"]
    assert channel.bodies("two") == [b"2", b"3"]
    assert (one.unacked, two.unacked) == (1, 2)
    assert (queue.message_count, queue.unacked_count) == (2, 3)
    _, _, entry = channel.deliveries[0]
    queue.settle(entry, one)
    queue.dispatch()
    assert channel.bodies("one") == [b"1", b"4"]
    assert queue.message_count == 1


def test_no_ack_consumer_ignores_prefetch_and_leaves_nothing_unacked() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    consumer = _attach(queue, channel, "auto", no_ack=True, prefetch=1)
    _publish(queue, "1", "2", "3")
    assert channel.bodies() == [b"1", b"2", b"3"]
    assert (consumer.unacked, queue.unacked_count, queue.message_count) == (0, 0, 0)


def test_channel_that_cannot_take_more_stops_dispatch() -> None:
    queue, busy, idle = Queue("q"), RecordingChannel(), RecordingChannel()
    busy.accepting = False
    _attach(queue, busy, "busy")
    _attach(queue, idle, "idle")
    _publish(queue, "1", "2")
    assert busy.deliveries == []
    assert idle.bodies() == [b"1", b"2"]
    idle.accepting = False
    _publish(queue, "3")
    assert queue.message_count == 1
    busy.accepting = True
    queue.dispatch()
    assert busy.bodies() == [b"3"]


def test_requeued_entries_go_back_before_newer_ones_in_original_order() -> None:
    queue = Queue("q")
    _publish(queue, "1", "2", "3", "4", "5")
    e1, e2, e3 = queue.get(), queue.get(), queue.get()
    assert e1 is not None and e2 is not None and e3 is not None
    _publish(queue, "6")
    queue.requeue([(e3, None), (e1, None)])  # given out of order
    assert queue.unacked_count == 1  # e2 is still out
    assert _ready(queue) == [(b"1", True), (b"3", True), (b"4", False), (b"5", False),
                             (b"6", False)]


def test_requeue_merges_with_entries_requeued_earlier() -> None:
    queue = Queue("q")
    _publish(queue, "1", "2", "3", "4")
    entries = [queue.get() for _ in range(3)]
    e1, e2, e3 = entries
    assert e1 is not None and e2 is not None and e3 is not None
    queue.requeue([(e3, None)])
    queue.requeue([(e1, None)])
    queue.requeue([(e2, None)])
    assert [body for body, _ in _ready(queue)] == [b"1", b"2", b"3", b"4"]


def test_requeue_with_consumers_redelivers_flagged() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    consumer = _attach(queue, channel, "c", prefetch=2)
    _publish(queue, "1", "2", "3")
    delivered = [(entry, consumer) for _, _, entry in channel.deliveries]
    assert [e.message.body for e, _ in delivered] == [b"1", b"2"]
    channel.deliveries.clear()
    queue.requeue(reversed(delivered))
    assert consumer.unacked == 0
    queue.dispatch()
    assert [(e.message.body, e.redelivered) for _, _, e in channel.deliveries] == [
        (b"1", True), (b"2", True),
    ]
    assert queue.message_count == 1


def test_remove_consumer_and_exclusive_bookkeeping() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    exclusive = _attach(queue, channel, "x", exclusive=True)
    assert queue.exclusive_use_conflict(False)
    assert queue.remove_consumer(exclusive)
    assert not queue.remove_consumer(exclusive)
    assert not queue.exclusive_use_conflict(True)
    _attach(queue, channel, "plain")
    assert queue.exclusive_use_conflict(True)
    assert not queue.exclusive_use_conflict(False)


def test_auto_delete_flag_needs_a_consumer_first() -> None:
    queue, channel = Queue("q", auto_delete=True), RecordingChannel()
    assert not queue.unused_and_auto_delete
    consumer = _attach(queue, channel, "c")
    assert not queue.unused_and_auto_delete
    queue.remove_consumer(consumer)
    assert queue.unused_and_auto_delete


def test_purge_and_delete() -> None:
    queue, channel = Queue("q"), RecordingChannel()
    _publish(queue, "1", "2")
    assert queue.purge() == 2
    assert queue.message_count == 0
    consumer = _attach(queue, channel, "c")
    _publish(queue, "3")
    [(_, _, entry)] = channel.deliveries
    assert queue.delete() == [consumer]
    assert queue.deleted and queue.consumer_count == 0
    queue.requeue([(entry, consumer)])  # late requeue after delete is dropped
    assert queue.message_count == 0
    assert queue.unacked_count == 0
