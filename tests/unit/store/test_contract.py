"""The QueueStore contract, run over every store: the memory store and the disk store must be
indistinguishable to a queue (order, requeue, settle, purge), whatever they do underneath."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from leveret.core.message import Entry
from leveret.store.base import QueueStore
from leveret.store.disk import DiskEngine
from leveret.store.memory import MemoryQueueStore
from leveret.store.segments import WINDOW_ENTRIES
from tests.unit.store.conftest import make_entry

StoreFactory = Callable[[], QueueStore]


@pytest.fixture(params=["memory", "disk"])
def new_store(request: pytest.FixtureRequest, engine: DiskEngine) -> StoreFactory:
    names = iter(range(1_000_000))
    if request.param == "memory":
        return MemoryQueueStore
    return lambda: engine.open_queue("/", f"q{next(names)}", durable=True)


def drain(store: QueueStore) -> list[Entry]:
    out = []
    while (entry := store.pop()) is not None:
        out.append(entry)
    return out


def bodies(entries: list[Entry]) -> list[bytes]:
    return [entry.message.body for entry in entries]


async def test_fifo_and_length(new_store: StoreFactory) -> None:
    store = new_store()
    assert store.pop() is None
    pushed = [make_entry(seq) for seq in range(1, 6)]
    for entry in pushed:
        store.push(entry)
    assert len(store) == 5
    assert bodies(drain(store)) == bodies(pushed)
    assert len(store) == 0


async def test_order_survives_more_than_the_memory_window(new_store: StoreFactory) -> None:
    store = new_store()
    count = WINDOW_ENTRIES * 3 + 7
    for seq in range(1, count + 1):
        store.push(make_entry(seq))
    assert len(store) == count
    popped = drain(store)
    assert [e.seq for e in popped] == list(range(1, count + 1))
    assert popped[-1].message.body == f"body {count}".encode()
    assert popped[-1].message.routing_key == f"key.{count}"


async def test_requeue_restores_the_original_order(new_store: StoreFactory) -> None:
    store = new_store()
    for seq in range(1, 8):
        store.push(make_entry(seq))
    first = [store.pop() for _ in range(4)]
    assert [e.seq for e in first if e] == [1, 2, 3, 4]
    store.requeue([first[2], first[0]])  # 3 and 1 go back, in seq order, before 5
    assert [e.seq for e in drain(store)] == [1, 3, 5, 6, 7]


async def test_requeue_merges_with_earlier_requeues(new_store: StoreFactory) -> None:
    store = new_store()
    for seq in range(1, 6):
        store.push(make_entry(seq))
    taken = drain(store)
    store.requeue([taken[3]])
    store.requeue([taken[1], taken[0]])
    assert [e.seq for e in drain(store)] == [1, 2, 4]


async def test_transient_and_persistent_keep_one_order(new_store: StoreFactory) -> None:
    store = new_store()
    for seq in range(1, WINDOW_ENTRIES + 200):
        store.push(make_entry(seq, persistent=seq % 3 != 0))
    assert [e.seq for e in drain(store)] == list(range(1, WINDOW_ENTRIES + 200))


async def test_purge_counts_and_empties(new_store: StoreFactory) -> None:
    store = new_store()
    for seq in range(1, WINDOW_ENTRIES + 51):
        store.push(make_entry(seq))
    held = store.pop()
    assert held is not None
    assert store.purge() == WINDOW_ENTRIES + 49
    assert len(store) == 0
    assert store.pop() is None
    store.settle(held)  # a delivery taken before the purge can still be settled
    store.push(make_entry(10_000))
    assert [e.seq for e in drain(store)] == [10_000]


async def test_settle_and_delete(new_store: StoreFactory) -> None:
    store = new_store()
    for seq in range(1, 4):
        store.push(make_entry(seq))
    for entry in drain(store):
        store.settle(entry)
    store.push(make_entry(4))
    store.delete()
    assert len(store) == 0
