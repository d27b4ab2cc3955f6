"""The in-memory store: ready entries in a deque, nothing on disk.

Used for transient queues, exclusive queues, and every queue of a broker without a data
directory. Messages here do not survive a restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from leveret.store.priority import PriorityQueueStore
from leveret.store.timed import MemoryTimedStore

if TYPE_CHECKING:
    from leveret.core.message import Entry


class MemoryQueueStore:
    """Ready entries of one queue, in a deque."""

    __slots__ = ("_ready",)
    deleted = False

    def __init__(self) -> None:
        self._ready: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._ready)

    def push(self, entry: Entry) -> None:
        self._ready.append(entry)

    def pop(self) -> Entry | None:
        return self._ready.popleft() if self._ready else None

    def peek(self) -> Entry | None:
        return self._ready[0] if self._ready else None

    def compact(self) -> int:
        """Drop entries marked dead (expired where they sat); return how many."""
        before = len(self._ready)
        self._ready = deque(entry for entry in self._ready if not entry.dead)
        return before - len(self._ready)

    def expiring(self) -> list[Entry]:
        return []

    def requeue(self, entries: list[Entry]) -> None:
        if not entries:
            return
        entries = sorted(entries, key=_seq)
        ready = self._ready
        # Requeued entries usually precede every ready one; merge with any that do not.
        newest = entries[-1].seq
        ahead = []
        while ready and ready[0].seq < newest:
            ahead.append(ready.popleft())
        if ahead:
            entries = sorted(entries + ahead, key=_seq)
        ready.extendleft(reversed(entries))

    def settle(self, entry: Entry) -> None:
        pass

    def purge(self) -> int:
        count = len(self._ready)
        self._ready.clear()
        return count

    def delete(self) -> None:
        self._ready.clear()


class MemoryMessageStore:
    """Opens memory queue stores; everything is "durable" at once because nothing is."""

    durable_ticket = 0
    changes = 0

    def open_queue(self, vhost: str, name: str, *, durable: bool, auto_delete: bool = False,
                   arguments: bytes = b"", max_priority: int = 0
                   ) -> MemoryQueueStore | PriorityQueueStore:
        if max_priority:
            return PriorityQueueStore(max_priority, lambda _: MemoryQueueStore())
        return MemoryQueueStore()

    def open_delays(self, vhost: str) -> MemoryTimedStore:
        return MemoryTimedStore()

    def ticket(self) -> int:
        return 0

    def when_durable(self, ticket: int, callback: Callable[[bool], None]) -> None:
        callback(True)

    def definitions_changed(self) -> None:
        pass

    def close(self) -> None:
        pass


def _seq(entry: Entry) -> int:
    return entry.seq
