"""Stores for messages that wait for a time (delayed delivery), in due-time order.

The index is a heap of ``(due_ms, seq, item)``. In memory the item is the entry itself. On
disk a persistent message is written to the store's segment files (its record's deadline is
the due time, so recovery rebuilds the heap from the records alone) and the heap keeps only
its position: a million delayed messages cost their index, not their bodies. The body is
read back when the message is due. A transient message stays in memory and is not recovered.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import TYPE_CHECKING

from leveret.core.message import Entry
from leveret.store.segments import DiskQueueStore, Recovered, Run

if TYPE_CHECKING:
    from leveret.store.disk import DiskEngine


class MemoryTimedStore:
    """Delayed messages in memory only (a broker without a data directory)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Entry | int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, entry: Entry) -> None:
        heapq.heappush(self._heap, (entry.expires_ms, entry.seq, entry))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> list[Entry]:
        """Every entry due by ``now_ms``, in due order; the caller settles each."""
        due: list[Entry] = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, _, item = heapq.heappop(self._heap)
            assert isinstance(item, Entry)
            due.append(item)
        return due

    def settle(self, entry: Entry) -> None:
        pass

    def max_seq(self) -> int:
        return max((seq for _, seq, _ in self._heap), default=0)


_SEQ_SHIFT = 64
_DUE_SHIFT = 104  # a heap key: due_ms | seq (40 bits) | position (64 bits)
_POSITION = (1 << 64) - 1
_SEQ = (1 << 40) - 1


class DiskTimedStore(DiskQueueStore):
    """Delayed messages of one vhost on disk; see the module docstring.

    The heap holds one int per message, due time, sequence and position packed together:
    about 50 bytes each, so a million delayed messages cost about 50 MB of index. A transient
    message (position 0: segment ids start at 1) waits in memory in ``_transient``.
    """

    def __init__(self, engine: DiskEngine, directory: Path,
                 recovered: Recovered | None = None) -> None:
        self._keys: list[int] = []
        self._transient: dict[int, Entry] = {}
        self._max_seq = 0
        super().__init__(engine, directory, recovered)

    def _load(self, runs: list[Run]) -> None:
        # Recovery makes a one-record run of every record with a deadline: all of ours.
        self._keys = [(run.deadline_ms << _DUE_SHIFT) | ((run.first_seq & _SEQ) << _SEQ_SHIFT)
                      | (run.segment.id << 32) | run.start for run in runs]
        heapq.heapify(self._keys)
        self._max_seq = max((run.first_seq for run in runs), default=0)

    def __len__(self) -> int:
        return len(self._keys)

    def push(self, entry: Entry) -> None:
        if entry.message.persistent:
            where = self._write(entry)
            position = (where[0].id << 32) | where[1]
        else:
            position = 0
            self._transient[entry.seq & _SEQ] = entry
        heapq.heappush(self._keys, (entry.expires_ms << _DUE_SHIFT)
                       | ((entry.seq & _SEQ) << _SEQ_SHIFT) | position)
        self._max_seq = max(self._max_seq, entry.seq)

    def next_due(self) -> int | None:
        return self._keys[0] >> _DUE_SHIFT if self._keys else None

    def pop_due(self, now_ms: int) -> list[Entry]:
        due: list[Entry] = []
        keys = self._keys
        while keys and keys[0] >> _DUE_SHIFT <= now_ms:
            key = heapq.heappop(keys)
            position = key & _POSITION
            if position:
                entry = self._read_at(position)
            else:
                entry = self._transient.pop((key >> _SEQ_SHIFT) & _SEQ, None)
            if entry is not None:
                due.append(entry)
        return due

    def max_seq(self) -> int:
        return self._max_seq
