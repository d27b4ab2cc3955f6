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

    def peek(self) -> Entry | None:
        """The head entry, left in place (a disk store may read it back first)."""
        ...

    def compact(self) -> int:
        """Forget entries marked dead (expired where they sat, already settled); return how
        many were dropped."""
        ...

    def expiring(self) -> list[Entry]:
        """After recovery: the entries that carry a TTL of their own."""
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


class TimedStore(Protocol):
    """Messages that wait for a due time (delayed delivery), taken in due order."""

    def __len__(self) -> int:
        ...

    def push(self, entry: Entry) -> None:
        """Keep ``entry`` until ``entry.expires_ms`` (its due time, ms since the epoch)."""
        ...

    def next_due(self) -> int | None:
        ...

    def pop_due(self, now_ms: int) -> list[Entry]:
        """Every entry due by ``now_ms``, in due order; the caller settles each."""
        ...

    def settle(self, entry: Entry) -> None:
        ...

    def max_seq(self) -> int:
        ...


class MessageStore(Protocol):
    """Opens the store of each queue and reports when writes are durable.

    Writes are grouped in numbered batches. `ticket()` names the batch that will commit
    everything stored so far; `durable_ticket` is the last batch on disk. A publisher confirm
    for a message stored in batch 7 waits until `durable_ticket >= 7`.
    """

    durable_ticket: int
    changes: int
    """Counts changes to durable definitions (queues, exchanges, bindings, vhosts, users)."""

    def open_queue(self, vhost: str, name: str, *, durable: bool, auto_delete: bool = False,
                   arguments: bytes = b"", max_priority: int = 0) -> QueueStore:
        """A new queue's store; ``arguments`` is its encoded argument table; a queue with a
        ``max_priority`` gets one sub-store per priority level."""
        ...

    def open_delays(self, vhost: str) -> TimedStore:
        """The store of a vhost's delayed messages (recovered, on disk)."""
        ...

    def ticket(self) -> int:
        ...

    def when_durable(self, ticket: int, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once batch ``ticket`` is durable, ``callback(False)`` if the
        store failed and it never will be."""
        ...

    def definitions_changed(self) -> None:
        """A durable queue, exchange, binding, vhost or user changed: save the definitions."""
        ...

    def close(self) -> None:
        ...
