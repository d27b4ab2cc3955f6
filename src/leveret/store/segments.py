"""The disk engine for one durable queue: segment files, ack logs, and a bounded window of
ready messages in memory.

A durable queue's ready messages form one ordered sequence of *items*: an `Entry` held in
memory, or a `Run` of consecutive records in one segment that are on disk only. New persistent
messages are written to the active segment and kept in memory only while the window has room;
after that they join a run and cost a few bytes. When a consumer reaches a run, a batch of its
records is read back and checked. So memory follows what is in flight, not what is waiting.

Transient messages on a durable queue are never written: they stay in memory as entries.

Settling a delivery appends its offset to the segment's ack log; a segment whose records are
all settled is deleted. Delivering appends a "delivered up to" mark once per flush, so that
recovery can tell which messages come back with redelivered=true. Layouts: `store.records`.

Writes are buffered and handed to the engine (`store.disk`), which writes and fsyncs them
once per event-loop iteration (group commit).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from leveret.core.message import Entry, Message
from leveret.store import records
from leveret.store.records import RecordError, StoredMessage

if TYPE_CHECKING:
    from leveret.store.disk import DiskEngine

log = logging.getLogger(__name__)

SEGMENT_SIZE = 8 * 1024 * 1024
WINDOW_ENTRIES = 2048  # ready persistent entries kept in memory per queue
WINDOW_BYTES = 8 * 1024 * 1024
READ_BATCH_BYTES = 512 * 1024


def position(segment_id: int, offset: int) -> int:
    return (segment_id << 32) | offset


class Segment:
    """One segment file and its ack log, with the writes not yet handed to the disk."""

    def __init__(self, directory: Path, segment_id: int, *, create: bool) -> None:
        self.id = segment_id
        self.path = directory / f"{segment_id:08d}.seg"
        self.ack_path = directory / f"{segment_id:08d}.acks"
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if create else 0)
        self.fd = os.open(self.path, flags, 0o644)
        self.ack_fd = os.open(self.ack_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.pending = bytearray(records.SEGMENT_HEADER if create else b"")
        self.written = 0 if create else os.fstat(self.fd).st_size
        self.ack_pending = bytearray()
        self.live = 0  # persistent records not yet settled
        self.delivered_upto = -1
        self.delivered_written = -1
        self.closed = False

    @property
    def size(self) -> int:
        return self.written + len(self.pending)

    def append(self, record: bytes) -> int:
        offset = self.size
        self.pending += record
        self.live += 1
        return offset

    def write_pending(self) -> bool:
        """Hand buffered bytes to the OS (page cache); return True if anything was written."""
        wrote = False
        if self.pending:
            os.pwrite(self.fd, self.pending, self.written)
            self.written += len(self.pending)
            self.pending.clear()
            wrote = True
        if self.delivered_upto > self.delivered_written:
            # Before the acks of the same flush: if the tail is torn, an ack is lost (its
            # message comes back, flagged redelivered) rather than the delivered mark.
            self.ack_pending[0:0] = records.encode_ack(records.DELIVERED, self.delivered_upto)
            self.delivered_written = self.delivered_upto
        if self.ack_pending:
            os.write(self.ack_fd, self.ack_pending)
            self.ack_pending.clear()
            wrote = True
        return wrote

    def read(self, offset: int, size: int) -> bytes:
        if offset + size > self.written:
            self.write_pending()
        return os.pread(self.fd, size, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.written = size

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            os.close(self.ack_fd)

    def unlink(self) -> None:
        """Remove the files; the descriptors stay valid until `close`."""
        for path in (self.path, self.ack_path):
            path.unlink(missing_ok=True)

    def remove(self) -> None:
        self.unlink()
        self.close()


@dataclass(slots=True)
class Run:
    """Consecutive on-disk records of one segment that are ready and not in memory."""

    segment: Segment
    start: int  # offset of the first record
    end: int  # offset after the last record
    count: int
    first_seq: int
    deadline_ms: int = 0  # set on the one-record runs recovery makes for expiring messages


@dataclass(slots=True)
class Recovered:
    """What recovery found for one queue directory."""

    segments: list[Segment] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    next_seq: int = 0
    redelivered_upto: int = -1  # records with seq <= this were delivered before the restart
    lost: int = 0


class DiskQueueStore:
    """The QueueStore of a durable queue (see `store.base.QueueStore`)."""

    def __init__(self, engine: DiskEngine, directory: Path, recovered: Recovered | None = None):
        self._engine = engine
        self.directory = directory
        self._items: deque[Entry | Run] = deque()
        self._count = 0
        self._window_entries = 0
        self._window_bytes = 0
        self._segments: dict[int, Segment] = {}
        self._redelivered_upto = -1
        self.deleted = False
        if recovered is not None and recovered.segments:
            for segment in recovered.segments:
                self._segments[segment.id] = segment
            self._active = recovered.segments[-1]
            self._redelivered_upto = recovered.redelivered_upto
            self._load(recovered.runs)
        else:
            self._active = self._new_segment(1)

    def _load(self, runs: list[Run]) -> None:
        """Take over what recovery found: runs stay on disk, expiring messages come in."""
        self._count = sum(run.count for run in runs)
        for run in runs:
            if run.deadline_ms:  # a message with its own TTL lives in memory
                while run.count > 0 and run.start < run.end:
                    self._items.extend(self._read(run))
            else:
                self._items.append(run)

    def __len__(self) -> int:
        return self._count

    def _new_segment(self, segment_id: int) -> Segment:
        segment = Segment(self.directory, segment_id, create=True)
        self._segments[segment_id] = segment
        self._engine.created(segment)
        return segment

    # -- QueueStore -------------------------------------------------------------------

    def push(self, entry: Entry) -> None:
        message = entry.message
        self._count += 1
        if not message.persistent:
            self._items.append(entry)
            return
        segment, offset, size = self._write(entry)
        tail = self._items[-1] if self._items else None
        # A message with its own TTL stays in memory too, so it can expire where it sits.
        if message.expiration is None and (isinstance(tail, Run)
                                           or not self._window_has_room(len(message.body))):
            if isinstance(tail, Run) and tail.segment is segment and tail.end == offset:
                tail.end += size
                tail.count += 1
            else:
                self._items.append(Run(segment, offset, offset + size, 1, entry.seq))
            return
        self._window_entries += 1
        self._window_bytes += len(message.body)
        self._items.append(entry)

    def pop(self) -> Entry | None:
        while self._items:
            item = self._items[0]
            if isinstance(item, Run):
                self._materialize(item)
                continue
            self._items.popleft()
            self._count -= 1
            if item.position >= 0:
                self._window_entries -= 1
                self._window_bytes -= len(item.message.body)
                segment = self._segments.get(item.position >> 32)
                if segment is not None:
                    segment.delivered_upto = max(segment.delivered_upto,
                                                 item.position & 0xFFFFFFFF)
                    self._engine.touch(segment)
            return item
        return None

    def requeue(self, entries: list[Entry]) -> None:
        if not entries or self.deleted:
            return
        entries = sorted(entries, key=_seq)
        newest = entries[-1].seq
        ahead: list[Entry] = []
        while self._items:
            head = self._items[0]
            if isinstance(head, Run) or head.seq >= newest:
                break
            ahead.append(head)
            self._items.popleft()
        merged = sorted(entries + ahead, key=_seq) if ahead else entries
        for entry in entries:
            if entry.position >= 0:
                self._window_entries += 1
                self._window_bytes += len(entry.message.body)
        self._count += len(entries)
        self._items.extendleft(reversed(merged))

    def settle(self, entry: Entry) -> None:
        if entry.position < 0 or self.deleted:
            return
        segment = self._segments.get(entry.position >> 32)
        if segment is None:
            return
        segment.ack_pending += records.encode_ack(records.ACK, entry.position & 0xFFFFFFFF)
        segment.live -= 1
        self._engine.touch(segment)
        if segment.live == 0:
            if segment is not self._active:
                self._drop_segment(segment)
            elif segment.size >= SEGMENT_SIZE // 8:
                self._roll()  # give a drained queue's space back without waiting for appends

    def purge(self) -> int:
        count = self._count
        items, self._items = self._items, deque()
        self._count = self._window_entries = self._window_bytes = 0
        for item in items:
            if isinstance(item, Run):
                self._settle_run(item)
            elif not item.dead:  # a dead (expired) entry was settled when it died
                self.settle(item)
        return count

    def delete(self) -> None:
        self.deleted = True
        self._items.clear()
        self._count = 0
        segments = list(self._segments.values())
        self._segments.clear()
        self._engine.remove_queue_directory(self, segments)

    def segments(self) -> list[Segment]:
        return list(self._segments.values())

    def peek(self) -> Entry | None:
        while self._items:
            item = self._items[0]
            if isinstance(item, Run):
                self._materialize(item)
                continue
            return item
        return None

    def compact(self) -> int:
        before = len(self._items)
        kept: deque[Entry | Run] = deque()
        for item in self._items:
            if isinstance(item, Entry) and item.dead:
                self._count -= 1
                if item.position >= 0:
                    self._window_entries -= 1
                    self._window_bytes -= len(item.message.body)
            else:
                kept.append(item)
        self._items = kept
        return before - len(kept)

    def expiring(self) -> list[Entry]:
        """The entries with a TTL of their own (kept in memory), for the queue's index."""
        return [item for item in self._items
                if isinstance(item, Entry) and item.message.expiration is not None]

    # -- internals --------------------------------------------------------------------

    def _write(self, entry: Entry) -> tuple[Segment, int, int]:
        """Append a persistent entry's record; set its position; return where and how big."""
        message = entry.message
        record = records.encode_fields(
            entry.seq, entry.timestamp_ms or int(time.time() * 1000), entry.expires_ms, True,
            message.exchange, message.routing_key, message.properties, message.body,
        )
        segment = self._active
        if segment.size >= SEGMENT_SIZE:
            segment = self._roll()
        offset = segment.append(record)
        self._engine.touch(segment, durable=True)
        entry.position = position(segment.id, offset)
        return segment, offset, len(record)

    def _read_at(self, where: int) -> Entry | None:
        """The entry whose record is at ``where`` (None, logged, if it fails its checks)."""
        segment = self._segments.get(where >> 32)
        if segment is None:
            return None
        offset = where & 0xFFFFFFFF
        head = records.read_head(segment.read(offset, records.HEAD_SIZE), 0)
        if head is None:
            log.error("queue store %s: segment %d: a damaged record head at %d; message lost",
                      self.directory.name, segment.id, offset)
            return None
        data = segment.read(offset, records.HEAD_SIZE + head[0])
        try:
            stored = records.decode_checked(data, head[1])
        except RecordError as err:
            log.error("queue store %s: segment %d: message lost to %s", self.directory.name,
                      segment.id, err)
            return None
        return self._entry(stored, where)

    def _window_has_room(self, size: int) -> bool:
        return self._window_entries < WINDOW_ENTRIES and self._window_bytes + size <= WINDOW_BYTES

    def _roll(self) -> Segment:
        old = self._active
        self._active = self._new_segment(old.id + 1)
        if old.live == 0:
            self._drop_segment(old)
        return self._active

    def _drop_segment(self, segment: Segment) -> None:
        del self._segments[segment.id]
        segment.unlink()
        self._engine.retire(segment)

    def _materialize(self, run: Run) -> None:
        """Replace the head of ``run`` by entries read back from disk (one batch).

        Every record is checked: a body that fails its checksum is dropped and logged; a
        damaged head makes the rest of the run unreadable, which is logged too. Nothing
        unchecked reaches a consumer.
        """
        entries = self._read(run)
        if run.count <= 0 or run.start >= run.end:
            self._items.popleft()
        self._items.extendleft(reversed(entries))

    def _read(self, run: Run) -> list[Entry]:
        """Read one batch of ``run`` into entries (counted in the window); advance the run."""
        segment = run.segment
        data = segment.read(run.start, min(run.end - run.start, READ_BATCH_BYTES))
        head = records.read_head(data, 0)
        if head is not None and records.HEAD_SIZE + head[0] > len(data):
            data = segment.read(run.start, records.HEAD_SIZE + head[0])  # one large record
        entries: list[Entry] = []
        offset = 0
        while run.count and offset < len(data):
            head = records.read_head(data, offset)
            if head is None:
                if len(data) - offset >= records.HEAD_SIZE:
                    self._lose(run, run.count, "a damaged record head")
                break
            end = offset + records.HEAD_SIZE + head[0]
            if end > len(data):
                break  # the next batch reads it
            run.count -= 1
            try:
                stored = records.decode_checked(data[offset:end], head[1])
            except RecordError as err:
                self._lose(run, 1, str(err))
            else:
                entries.append(self._entry(stored, position(segment.id, run.start + offset)))
            offset = end
        run.start += offset
        for entry in entries:
            self._window_entries += 1
            self._window_bytes += len(entry.message.body)
        return entries

    def _entry(self, stored: StoredMessage, where: int) -> Entry:
        message = Message.from_wire(stored.exchange, stored.routing_key, stored.properties,
                                    stored.body)
        entry = Entry(message, stored.seq, redelivered=stored.seq <= self._redelivered_upto,
                      timestamp_ms=stored.timestamp_ms)
        entry.expires_ms = stored.deadline_ms
        entry.position = where
        return entry

    def _lose(self, run: Run, count: int, reason: str) -> None:
        log.error("queue store %s: segment %d: %d message(s) lost to %s", self.directory.name,
                  run.segment.id, count, reason)
        self._count -= count
        run.segment.live -= count
        if count == run.count:
            run.count = 0
            run.start = run.end

    def _settle_run(self, run: Run) -> None:
        """Settle every record of a run without reading bodies (purge)."""
        segment = run.segment
        if segment.live == run.count and segment is not self._active:
            self._drop_segment(segment)
            return
        data = segment.read(run.start, run.end - run.start)
        offset = 0
        while offset < len(data):
            head = records.read_head(data, offset)
            if head is None:
                break
            segment.ack_pending += records.encode_ack(records.ACK, run.start + offset)
            offset += records.HEAD_SIZE + head[0]
        segment.live -= run.count
        self._engine.touch(segment)
        if segment.live <= 0 and segment is not self._active:
            self._drop_segment(segment)


def _seq(entry: Entry) -> int:
    return entry.seq


def recover_directory(directory: Path) -> Recovered:
    """Read a queue directory's segments and ack logs; truncate torn tails; drop settled
    segments. Everything found is checked against its checksums."""
    found = Recovered()
    ids = sorted(int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit())
    delivered_seq = -1
    for segment_id in ids:
        segment = Segment(directory, segment_id, create=False)
        data = os.pread(segment.fd, segment.written, 0) if segment.written else b""
        try:
            scan = records.scan_segment(data)
        except RecordError as err:
            log.error("queue store %s: %s: %s; set aside as %s.bad", directory.name,
                      segment.path.name, err, segment.path.name)
            segment.close()
            segment.path.rename(segment.path.with_suffix(".seg.bad"))
            found.lost += 1
            continue
        ack_data = os.pread(segment.ack_fd, os.fstat(segment.ack_fd).st_size, 0)
        acked, delivered, ack_end, ack_lost = records.scan_acks(ack_data)
        if ack_lost:
            os.ftruncate(segment.ack_fd, ack_end)
            log.warning("queue store %s: %s: ack log damaged after %d records; truncated",
                        directory.name, segment.ack_path.name, ack_end // records.ACK_SIZE)
        if scan.end < len(data):
            segment.truncate(scan.end)
        if scan.lost:
            found.lost += scan.lost
            log.warning("queue store %s: %s: %d damaged record(s) dropped", directory.name,
                        segment.path.name, scan.lost)
        live = [r for r in scan.records if r[0] not in acked]
        segment.live = len(live)
        segment.delivered_upto = segment.delivered_written = delivered
        for offset, seq, _, _ in scan.records:
            found.next_seq = max(found.next_seq, seq)
            if offset <= delivered:
                delivered_seq = max(delivered_seq, seq)
        found.runs.extend(_runs(segment, live))
        found.segments.append(segment)
    found.redelivered_upto = delivered_seq
    # A segment with nothing live goes, except the newest, which takes the next appends.
    for segment in found.segments[:-1]:
        if not segment.live:
            segment.remove()
    found.segments = [s for s in found.segments[:-1] if s.live] + found.segments[-1:]
    return found


def _runs(segment: Segment, live: Iterable[tuple[int, int, int, int]]) -> list[Run]:
    runs: list[Run] = []
    for offset, seq, size, deadline_ms in live:
        last = runs[-1] if runs else None
        if deadline_ms:
            runs.append(Run(segment, offset, offset + size, 1, seq, deadline_ms))
        elif last is not None and last.end == offset and not last.deadline_ms:
            last.end += size
            last.count += 1
        else:
            runs.append(Run(segment, offset, offset + size, 1, seq))
    return runs
