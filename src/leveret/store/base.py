"""The storage interfaces the core uses: where a queue keeps its ready messages.

A queue hands every new message to its `QueueStore` and takes the next one from it when a
consumer has room; settled (acked or dropped) and requeued deliveries are reported back. The
memory store keeps entries in a deque; a disk store keeps them in segment files and only
positions in memory, behind the same calls, so the queue code does not change.

Durability is reported through `MessageStore.when_durable`: the callback runs once everything
stored so far is safe on disk (at once for the memory store). Publisher confirms and
transaction commits wait on it.

This module must not import `core` at run time (imports run downward: core -> store).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from leveret.core.message import Entry


class StoreError(Exception):
    """A store cannot do what was asked (disk full, I/O error); sticky once raised."""


class QueueStore(Protocol):
    """The ready messages of one queue, in delivery order."""

    def __len__(self) -> int:
        """How many entries are ready."""
        ...

    def push(self, entry: Entry) -> None:
        """Append a newly published entry at the tail."""
        ...

    def pop(self) -> Entry | None:
        """Remove and return the head entry, or None when empty."""
        ...

    def requeue(self, entries: list[Entry]) -> None:
        """Put delivered entries back in their original order (by ``seq``)."""
        ...

    def settle(self, entry: Entry) -> None:
        """A delivered entry is finished with: acked, or rejected without requeue."""
        ...

    def purge(self) -> int:
        """Drop every ready entry; return how many."""
        ...

    def delete(self) -> None:
        """The queue is deleted: release everything."""
        ...


class MessageStore(Protocol):
    """Opens the store of each queue and reports when writes are durable."""

    def open_queue(self, vhost: str, name: str, *, durable: bool) -> QueueStore:
        ...

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything stored so far is durable."""
        ...

    def close(self) -> None:
        ...
