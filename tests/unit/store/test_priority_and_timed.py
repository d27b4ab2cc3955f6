"""The priority store and the timed (delayed-message) stores, over memory and over disk, and the
parts of the disk queue store that expiry relies on: peek, compact, expiring.

Disk stores run on a real DiskEngine in a temporary directory; a restart is a close of the
engine and a new one on the same directory, as after a clean shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from leveret.core.message import DELIVERY_MODE, EXPIRATION, PRIORITY, Entry, Message
from leveret.core.message import build_properties as properties
from leveret.store.base import QueueStore, TimedStore
from leveret.store.disk import DiskEngine
from leveret.store.memory import MemoryQueueStore
from leveret.store.priority import PriorityQueueStore
from leveret.store.segments import WINDOW_ENTRIES, DiskQueueStore
from leveret.store.timed import DiskTimedStore, MemoryTimedStore
from tests.unit.store.conftest import make_entry

MAX = 5


def entry(seq: int, *, priority: int | None = None, persistent: bool = True,
          expiration: int | None = None, due_ms: int = 0) -> Entry:
    fields = {DELIVERY_MODE: b"\x02" if persistent else b"\x01"}
    if priority is not None:
        fields[PRIORITY] = bytes([priority])
    if expiration is not None:
        fields[EXPIRATION] = bytes([len(str(expiration))]) + str(expiration).encode()
    made = Entry(Message.from_wire("ex", f"key.{seq}", properties(fields), f"b{seq}".encode()),
                 seq, timestamp_ms=1_000)
    made.expires_ms = due_ms
    return made


def drain(store: QueueStore) -> list[int]:
    out = []
    while (taken := store.pop()) is not None:
        out.append(taken.seq)
    return out


async def committed(engine: DiskEngine) -> None:
    done = asyncio.get_running_loop().create_future()
    engine.when_durable(engine.ticket(), done.set_result)
    assert await asyncio.wait_for(done, 10) is True


# -- priority stores -----------------------------------------------------------------------

PRIORITIES = [(1, 0), (2, 5), (3, 3), (4, 5), (5, 9), (6, None), (7, 1), (8, 3)]
PRIORITY_ORDER = [2, 4, 5, 3, 8, 7, 1, 6]  # 9 counts as 5; none as 0


@pytest.fixture(params=["memory", "disk"])
def priority_store(request: pytest.FixtureRequest, engine: DiskEngine
                   ) -> Callable[[], PriorityQueueStore]:
    names = iter(range(1000))

    def open_store() -> PriorityQueueStore:
        if request.param == "memory":
            return PriorityQueueStore(MAX, lambda _: MemoryQueueStore())
        store = engine.open_queue("/", f"pq{next(names)}", durable=True, max_priority=MAX)
        assert isinstance(store, PriorityQueueStore)
        return store

    return open_store


async def test_priority_order_and_length(priority_store: Callable[[], PriorityQueueStore]
                                         ) -> None:
    store = priority_store()
    assert store.pop() is None and store.peek() is None
    for seq, priority in PRIORITIES:
        store.push(entry(seq, priority=priority))
    assert len(store) == len(PRIORITIES)
    head = store.peek()
    assert head is not None and head.seq == 2
    assert drain(store) == PRIORITY_ORDER
    assert len(store) == 0


async def test_priority_requeue_returns_to_its_place_in_its_level(
        priority_store: Callable[[], PriorityQueueStore]) -> None:
    store = priority_store()
    for seq, priority in PRIORITIES:
        store.push(entry(seq, priority=priority))
    taken = [store.pop() for _ in range(5)]  # 2, 4, 5, 3, 8
    assert [e.seq for e in taken if e] == PRIORITY_ORDER[:5]
    store.requeue([e for e in taken if e and e.seq in (8, 4)])
    store.push(entry(9, priority=3))
    assert drain(store) == [4, 8, 9, 7, 1, 6]


async def test_priority_purge(priority_store: Callable[[], PriorityQueueStore]) -> None:
    store = priority_store()
    for seq, priority in PRIORITIES:
        store.push(entry(seq, priority=priority))
    held = store.pop()
    assert store.purge() == len(PRIORITIES) - 1
    assert (len(store), store.pop()) == (0, None)
    assert held is not None
    store.settle(held)
    store.push(entry(20, priority=1))
    assert drain(store) == [20]


async def test_disk_priority_delete_removes_the_directory(engine: DiskEngine) -> None:
    store = engine.open_queue("/", "pq", durable=True, max_priority=MAX)
    assert isinstance(store, PriorityQueueStore)
    for seq, priority in PRIORITIES:
        store.push(entry(seq, priority=priority))
    await committed(engine)
    directory = engine.queues_dir / next(p.name for p in engine.queues_dir.iterdir())
    assert sorted(p.name for p in directory.glob("p*")) == ["p0", "p1", "p3", "p5"]
    store.delete()
    await committed(engine)
    assert not directory.exists()
    assert list(engine.queues_dir.iterdir()) == []


async def test_durable_priority_queue_is_recovered(engine: DiskEngine) -> None:
    store = engine.open_queue("/", "pq", durable=True, max_priority=MAX)
    for seq, priority in PRIORITIES:
        store.push(entry(seq, priority=priority))
    store.push(entry(30, priority=4, persistent=False))  # transient: not recovered
    acked, held = store.pop(), store.pop()  # 30 is not the head: 2 and 4 are
    assert acked is not None and held is not None and (acked.seq, held.seq) == (2, 4)
    store.settle(acked)
    await committed(engine)
    engine.close()
    reopened = DiskEngine(engine.data_dir)
    try:
        [(meta, recovered, found)] = list(reopened.recover_queues())
        assert (meta["name"], meta["max_priority"]) == ("pq", MAX)
        assert isinstance(recovered, PriorityQueueStore)
        assert len(recovered) == len(PRIORITIES) - 1
        assert found.next_seq == 8
        recovered.push(entry(40, priority=2))  # a level that had no directory yet
        first = recovered.peek()
        assert first is not None and (first.seq, first.redelivered) == (4, True)
        assert drain(recovered) == [4, 5, 3, 8, 40, 7, 1, 6]
    finally:
        reopened.close()


# -- timed stores --------------------------------------------------------------------------

DUE = [(1, 300), (2, 100), (3, 200), (4, 100), (5, 250)]


@pytest.fixture(params=["memory", "disk"])
async def timed_store(request: pytest.FixtureRequest, engine: DiskEngine) -> TimedStore:
    if request.param == "memory":
        return MemoryTimedStore()
    return engine.open_delays("/")


async def test_pop_due_in_due_order_then_sequence(timed_store: TimedStore) -> None:
    store = timed_store
    assert (len(store), store.next_due(), store.pop_due(10**12)) == (0, None, [])
    for seq, due in DUE:
        store.push(entry(seq, due_ms=due, persistent=seq % 2 == 1))
    assert (len(store), store.next_due(), store.max_seq()) == (5, 100, 5)
    assert store.pop_due(99) == []
    first = store.pop_due(150)
    assert [e.seq for e in first] == [2, 4]
    assert [e.message.body for e in first] == [b"b2", b"b4"]
    assert store.next_due() == 200
    assert [e.seq for e in store.pop_due(300)] == [3, 5, 1]
    assert (len(store), store.next_due()) == (0, None)


async def test_disk_delays_survive_a_restart_until_settled(tmp_path: Path) -> None:
    engine = DiskEngine(tmp_path / "data")
    store = engine.open_delays("/")
    for seq, due in DUE:
        store.push(entry(seq, due_ms=due, persistent=seq != 3))
    settled, taken = store.pop_due(150)
    assert (settled.seq, taken.seq) == (2, 4)
    store.settle(settled)  # routed; 4 was taken but not settled when the broker stopped
    await committed(engine)
    engine.close()
    engine = DiskEngine(tmp_path / "data")
    try:
        recovered = engine.open_delays("/")
        assert isinstance(recovered, DiskTimedStore)
        assert (len(recovered), recovered.next_due(), recovered.max_seq()) == (3, 100, 5)
        back = recovered.pop_due(10**12)
        assert [(e.seq, e.expires_ms, e.message.body) for e in back] == [
            (4, 100, b"b4"), (5, 250, b"b5"), (1, 300, b"b1")]  # 3 was transient
        for due in back:
            recovered.settle(due)
        await committed(engine)
    finally:
        engine.close()
    engine = DiskEngine(tmp_path / "data")
    try:
        assert len(engine.open_delays("/")) == 0
    finally:
        engine.close()


# -- DiskQueueStore: peek, compact, expiring ------------------------------------------------


async def test_disk_peek_leaves_the_head_in_place(tmp_path: Path) -> None:
    engine = DiskEngine(tmp_path / "data")
    store = engine.open_queue("/", "q", durable=True)
    for seq in range(1, 6):
        store.push(make_entry(seq))
    await committed(engine)
    engine.close()
    engine = DiskEngine(tmp_path / "data")
    try:
        [(_, recovered, _)] = list(engine.recover_queues())  # every record is on disk only
        head = recovered.peek()
        assert head is not None and head.seq == 1 and head.message.body == b"body 1"
        assert len(recovered) == 5
        again = recovered.peek()
        assert again is head
        popped = recovered.pop()
        assert popped is head
        assert drain(recovered) == [2, 3, 4, 5]
        assert recovered.peek() is None
    finally:
        engine.close()


async def test_disk_compact_drops_entries_marked_dead(engine: DiskEngine) -> None:
    store = engine.open_queue("/", "q", durable=True)
    assert isinstance(store, DiskQueueStore)
    pushed = [entry(seq, expiration=60_000, due_ms=10**13) for seq in range(1, 7)]
    for item in pushed:
        store.push(item)
    store.push(entry(7, persistent=False))
    for item in pushed[1::2]:  # 2, 4, 6 expired where they sat: settled, then marked dead
        store.settle(item)
        item.dead = True
    assert len(store) == 7
    assert store.compact() == 3
    assert len(store) == 4
    assert store.compact() == 0
    assert drain(store) == [1, 3, 5, 7]


async def test_disk_expiring_entries_stay_in_memory_and_are_recovered(tmp_path: Path) -> None:
    engine = DiskEngine(tmp_path / "data")
    store = engine.open_queue("/", "q", durable=True)
    plain = WINDOW_ENTRIES + 10  # beyond the window: the plain tail is on disk only
    for seq in range(1, plain + 1):
        store.push(entry(seq))
    store.push(entry(plain + 1, expiration=5_000, due_ms=20_000))
    store.push(entry(plain + 2))
    store.push(entry(plain + 3, expiration=9_000, due_ms=10_000))
    assert [e.seq for e in store.expiring()] == [plain + 1, plain + 3]
    await committed(engine)
    engine.close()
    engine = DiskEngine(tmp_path / "data")
    try:
        [(_, recovered, _)] = list(engine.recover_queues())
        expiring = recovered.expiring()
        assert [(e.seq, e.expires_ms, e.message.expiration) for e in expiring] == [
            (plain + 1, 20_000, "5000"), (plain + 3, 10_000, "9000")]
        assert drain(recovered) == list(range(1, plain + 4))
    finally:
        engine.close()
