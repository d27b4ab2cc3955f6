"""Property tests for leveret.core.queue.Queue against small reference models.

(a) Priorities: random publishes (priority 0..12 or none) into a queue with a random
    x-max-priority, interleaved with gets and requeues of taken entries; every get must
    return what the model says: highest clamped priority first, FIFO by arrival within a
    priority, a requeued entry back at its original place within its level.
(b) TTL ordering, with real (short) times: messages with expirations from {0, 30, 60, 120, none}
    ms; after 250 ms exactly the ones with a TTL were dead-lettered, in order of expiry time
    (ties by arrival), and the others remain in FIFO order.

The queues are real, with memory stores; dead letters are recorded by `RecordingHost`.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.core.message import Entry
from leveret.core.queue import Queue
from leveret.store.memory import MemoryMessageStore
from tests.unit.queue_helpers import DLX, RecordingHost, drain, make_queue, message

# -- (a) priorities ----------------------------------------------------------------------

Op = tuple[str, int | None]

operations = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.one_of(st.none(), st.integers(0, 12))),
    st.tuples(st.just("get"), st.none()),
    st.tuples(st.just("requeue"), st.integers(0, 63)),
    st.tuples(st.just("requeue-all"), st.none()),
), max_size=60)


class PriorityModel:
    """The reference: ready arrivals as (level, arrival) pairs; a get takes the highest
    level, then the earliest arrival."""

    def __init__(self, max_priority: int) -> None:
        self.max_priority = max_priority
        self.ready: set[tuple[int, int]] = set()
        self.level: dict[int, int] = {}

    def publish(self, arrival: int, priority: int | None) -> None:
        self.level[arrival] = min(priority or 0, self.max_priority)
        self.ready.add((self.level[arrival], arrival))

    def get(self) -> int | None:
        if not self.ready:
            return None
        best = min(self.ready, key=lambda item: (-item[0], item[1]))
        self.ready.remove(best)
        return best[1]

    def requeue(self, arrival: int) -> None:
        self.ready.add((self.level[arrival], arrival))


def _arrival(entry: Entry | None) -> int | None:
    return None if entry is None else int(entry.message.body)


@settings(max_examples=150, deadline=None)
@given(max_priority=st.integers(1, 10), ops=operations)
def test_gets_follow_the_priority_model(max_priority: int, ops: list[Op]) -> None:
    store = MemoryMessageStore().open_queue("/", "q", durable=False, max_priority=max_priority)
    queue = Queue("q", arguments={"x-max-priority": max_priority}, store=store)
    model = PriorityModel(max_priority)
    held: list[Entry] = []
    arrivals = 0
    for op, value in ops:
        if op == "publish":
            queue.publish(message(str(arrivals), priority=value))
            model.publish(arrivals, value)
            arrivals += 1
        elif op == "get":
            entry = queue.get()
            assert _arrival(entry) == model.get()
            if entry is not None:
                held.append(entry)
        elif held:
            chosen = [held.pop(value % len(held))] if op == "requeue" else held[::-1]
            if op == "requeue-all":
                held.clear()
            queue.requeue([(entry, None) for entry in chosen])
            for entry in chosen:
                model.requeue(int(entry.message.body))
        assert queue.message_count == len(model.ready)
    queue.requeue([(entry, None) for entry in held])
    for entry in held:
        model.requeue(int(entry.message.body))
    expected = []
    while (arrival := model.get()) is not None:
        expected.append(str(arrival).encode())
    assert drain(queue) == expected


def test_priority_above_the_maximum_counts_as_the_maximum() -> None:
    store = MemoryMessageStore().open_queue("/", "q", durable=False, max_priority=3)
    queue = Queue("q", arguments={"x-max-priority": 3}, store=store)
    for body, priority in (("a", 3), ("b", 200), ("c", 2), ("d", 3), ("e", None)):
        queue.publish(message(body, priority=priority))
    assert drain(queue) == [b"a", b"b", b"d", b"c", b"e"]


# -- (b) TTL ordering --------------------------------------------------------------------

TTLS = (0, 30, 60, 120, None)


@settings(max_examples=25, deadline=None)
@given(ttls=st.lists(st.sampled_from(TTLS), min_size=1, max_size=12))
async def test_messages_expire_in_order_of_their_deadlines(ttls: list[int | None]) -> None:
    host = RecordingHost()
    queue = make_queue(host, **DLX)
    for arrival, ttl in enumerate(ttls):
        queue.publish(message(str(arrival), expiration=ttl))
    await asyncio.sleep(0.25)
    with_ttl = sorted((ttl, arrival) for arrival, ttl in enumerate(ttls) if ttl is not None)
    assert host.dead == [(str(arrival).encode(), "expired") for _, arrival in with_ttl]
    without = [str(arrival).encode() for arrival, ttl in enumerate(ttls) if ttl is None]
    assert queue.message_count == len(without)
    assert drain(queue) == without
