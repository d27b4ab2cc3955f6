"""A priority queue's store: one store per priority level, highest level first.

Like RabbitMQ's classic priority queues, each level is a FIFO store of its own (in memory, or a
sub-directory of the queue's directory on disk), made when the first message of that level
arrives. FIFO holds within a level; a requeued entry goes back to its own level's place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leveret.core.message import Entry
    from leveret.store.base import QueueStore


class PriorityQueueStore:
    """The QueueStore of a queue declared with x-max-priority."""

    def __init__(self, max_priority: int, make_level: Callable[[int], QueueStore],
                 levels: dict[int, QueueStore] | None = None) -> None:
        self.max_priority = max_priority
        self._make_level = make_level
        self._levels: dict[int, QueueStore] = dict(levels or {})
        self._order = sorted(self._levels, reverse=True)
        self.deleted = False

    def level_of(self, entry: Entry) -> int:
        return min(entry.message.priority, self.max_priority)

    def _level(self, level: int) -> QueueStore:
        store = self._levels.get(level)
        if store is None:
            store = self._levels[level] = self._make_level(level)
            self._order = sorted(self._levels, reverse=True)
        return store

    def __len__(self) -> int:
        return sum(len(store) for store in self._levels.values())

    def push(self, entry: Entry) -> None:
        self._level(self.level_of(entry)).push(entry)

    def pop(self) -> Entry | None:
        for level in self._order:
            entry = self._levels[level].pop()
            if entry is not None:
                return entry
        return None

    def peek(self) -> Entry | None:
        for level in self._order:
            entry = self._levels[level].peek()
            if entry is not None:
                return entry
        return None

    def requeue(self, entries: list[Entry]) -> None:
        by_level: dict[int, list[Entry]] = {}
        for entry in entries:
            by_level.setdefault(self.level_of(entry), []).append(entry)
        for level, group in by_level.items():
            self._level(level).requeue(group)

    def settle(self, entry: Entry) -> None:
        store = self._levels.get(self.level_of(entry))
        if store is not None:
            store.settle(entry)

    def purge(self) -> int:
        return sum(store.purge() for store in self._levels.values())

    def compact(self) -> int:
        return sum(store.compact() for store in self._levels.values())

    def expiring(self) -> list[Entry]:
        return [entry for store in self._levels.values() for entry in store.expiring()]

    def delete(self) -> None:
        self.deleted = True
        for store in self._levels.values():
            store.delete()
