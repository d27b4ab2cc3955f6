"""The disk store: a data directory of queue directories, group commit, and the I/O thread.

Layout of the data directory::

    LOCK                     held (flock) while a broker uses the directory
    definitions.json         vhosts, users, durable exchanges and bindings (atomic rewrite)
    queues/<hash>/queue.json the declaration of one durable queue (atomic write)
    queues/<hash>/*.seg      its segment files and ack logs (`store.segments`)

Group commit: during an event-loop iteration, queue stores append records to memory buffers
and mark their segments. At the end of the iteration (`_flush`, scheduled with call_soon) the
buffers are written to the files in one `pwrite` each, and one commit job goes to the single
I/O thread: run ordered file jobs (queue.json, deletions), rewrite definitions.json if it
changed, fdatasync every file written, fsync directories that gained files. When it is done,
every `when_durable` callback of that batch runs on the loop: publisher confirms and
transaction commits are sent only then. While one commit runs, the next batch collects.

Writes to the page cache happen on the loop (they do not wait for the disk); everything that
waits for the disk (fsync, rename, rmtree) happens on the I/O thread. A failed write or fsync
is sticky: the store stops confirming and says so once in the log.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from leveret.store.base import QueueStore, StoreError
from leveret.store.memory import MemoryMessageStore
from leveret.store.priority import PriorityQueueStore
from leveret.store.segments import DiskQueueStore, Recovered, Segment, recover_directory
from leveret.store.timed import DiskTimedStore

log = logging.getLogger(__name__)

DATA_VERSION = 1
DurableCallback = Callable[[bool], None]


def write_atomically(path: Path, data: bytes) -> None:
    """tmp -> fsync -> rename -> fsync of the directory: the file is old or new, never torn."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def queue_directory_name(vhost: str, name: str) -> str:
    return hashlib.sha256(f"{vhost}\x00{name}".encode()).hexdigest()[:24]


class DiskEngine:
    """The broker's MessageStore when it has a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.queues_dir = data_dir / "queues"
        try:
            self.queues_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot use data directory {data_dir}: {err.strerror}") from err
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self._lock_fd)
            raise StoreError(f"data directory {data_dir} is in use by another broker") from err
        self._check_version()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leveret-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._written: set[Segment] = set()  # segments with buffered bytes
        self._to_sync: set[Segment] = set()  # segments written since the last commit
        self._new_dirs: set[Path] = set()
        self._jobs: list[Callable[[], None]] = []
        self._stores: set[DiskQueueStore] = set()
        self._waiters: list[tuple[int, DurableCallback]] = []
        self._definitions: Callable[[], dict[str, Any]] | None = None
        self._definitions_dirty = False
        self._ticket = 1
        self.durable_ticket = 0
        self._flush_scheduled = False
        self._committing = False
        self.changes = 0
        self.failed: StoreError | None = None
        self._closed = False

    def _check_version(self) -> None:
        marker = self.data_dir / "VERSION"
        if marker.exists():
            version = marker.read_text().strip()
            if version != str(DATA_VERSION):
                raise StoreError(f"data directory {self.data_dir} has format version {version}; "
                                 f"this Leveret reads version {DATA_VERSION}")
        else:
            write_atomically(marker, f"{DATA_VERSION}\n".encode())

    # -- the MessageStore API ---------------------------------------------------------

    def open_queue(self, vhost: str, name: str, *, durable: bool, auto_delete: bool = False,
                   arguments: bytes = b"", max_priority: int = 0) -> QueueStore:
        """A new queue's store; a durable one gets a directory and a queue.json."""
        if not durable:
            return MemoryMessageStore().open_queue(vhost, name, durable=False,
                                                   max_priority=max_priority)
        directory = self.queues_dir / queue_directory_name(vhost, name)
        if directory.exists():  # a leftover of a deletion that did not finish
            shutil.rmtree(directory)
        directory.mkdir()
        meta = {"version": DATA_VERSION, "vhost": vhost, "name": name,
                "auto_delete": auto_delete, "arguments": base64.b64encode(arguments).decode(),
                "max_priority": max_priority}
        self._new_dirs.add(self.queues_dir)
        self._job(lambda: write_atomically(directory / "queue.json",
                                           json.dumps(meta).encode()))
        self.changes += 1
        if max_priority:
            return DiskPriorityStore(self, directory, max_priority, {})
        return self._store(directory)

    def _store(self, directory: Path, recovered: Recovered | None = None) -> DiskQueueStore:
        if not directory.exists():  # a new priority level: its directory entry must last too
            directory.mkdir()
            self._new_dirs.add(directory.parent)
        store = DiskQueueStore(self, directory, recovered)
        self._stores.add(store)
        return store

    def open_delays(self, vhost: str) -> DiskTimedStore:
        """A vhost's delayed messages: recovered from its directory, or a new one."""
        directory = self.data_dir / "delays" / queue_directory_name(vhost, "")
        recovered = recover_directory(directory) if directory.exists() else None
        if recovered is None:
            directory.mkdir(parents=True)
            self._new_dirs.update((directory.parent, self.data_dir))
        store = DiskTimedStore(self, directory, recovered)
        self._stores.add(store)
        return store

    def ticket(self) -> int:
        """The batch that will make durable everything stored so far."""
        return self._ticket

    def when_durable(self, ticket: int, callback: DurableCallback) -> None:
        """Call ``callback(True)`` once batch ``ticket`` is on disk (False if it failed)."""
        if self.failed is not None:
            callback(False)
        elif ticket <= self.durable_ticket:
            callback(True)
        else:
            self._waiters.append((ticket, callback))
            self._schedule()

    def set_definitions_source(self, source: Callable[[], dict[str, Any]]) -> None:
        self._definitions = source

    def definitions_changed(self) -> None:
        self._definitions_dirty = True
        self.changes += 1
        self._schedule()

    def load_definitions(self) -> dict[str, Any]:
        path = self.data_dir / "definitions.json"
        if not path.exists():
            return {}
        try:
            loaded: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            raise StoreError(f"cannot read {path}: {err}") from err
        return loaded

    def recover_queues(self) -> Iterator[tuple[dict[str, Any], QueueStore, Recovered]]:
        """Every durable queue on disk: its queue.json, its store, and what recovery found."""
        for directory in sorted(self.queues_dir.iterdir()):
            meta_path = directory / "queue.json"
            if not directory.is_dir():
                continue
            if not meta_path.exists():
                # Its declaration never became durable, so nothing in it was confirmed.
                log.warning("removing %s: a queue directory without queue.json", directory)
                shutil.rmtree(directory)
                continue
            meta = json.loads(meta_path.read_bytes())
            if meta.get("max_priority"):
                levels: dict[int, QueueStore] = {}
                recovered = Recovered()
                for level_dir in directory.glob("p*"):
                    found = recover_directory(level_dir)
                    levels[int(level_dir.name[1:])] = self._store(level_dir, found)
                    recovered.next_seq = max(recovered.next_seq, found.next_seq)
                    recovered.lost += found.lost
                yield meta, DiskPriorityStore(self, directory, meta["max_priority"],
                                              levels), recovered
                continue
            recovered = recover_directory(directory)
            yield meta, self._store(directory, recovered), recovered

    # -- called by queue stores -------------------------------------------------------

    def touch(self, segment: Segment, durable: bool = False) -> None:
        """``segment`` has buffered bytes; ``durable``: a confirm will wait for them."""
        self._written.add(segment)
        self._schedule()

    def forget(self, segment: Segment) -> None:
        """``segment`` is being deleted: no write or fsync may touch it again."""
        self._written.discard(segment)
        self._to_sync.discard(segment)

    def retire(self, segment: Segment) -> None:
        """Close a deleted segment's files on the I/O thread, after any fsync in flight."""
        self.forget(segment)
        self._job(segment.close)

    def created(self, segment: Segment) -> None:
        """A new segment file: its directory entry must be made durable too."""
        self._new_dirs.add(segment.path.parent)
        self._written.add(segment)
        self._schedule()

    def remove_queue_directory(self, store: DiskQueueStore, segments: list[Segment]) -> None:
        self._stores.discard(store)
        for segment in segments:
            self.forget(segment)

        def remove() -> None:
            for segment in segments:
                segment.close()
            shutil.rmtree(store.directory, ignore_errors=True)

        self._job(remove)
        self.changes += 1

    def _job(self, job: Callable[[], None]) -> None:
        self._jobs.append(job)
        self._schedule()

    # -- group commit -----------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.failed is not None or self._closed:
            return
        try:
            for segment in self._written:
                if segment.write_pending():
                    self._to_sync.add(segment)
        except OSError as err:
            self._fail(StoreError(f"write failed: {err}"))
            return
        self._written.clear()
        if self._committing or not (self._to_sync or self._jobs or self._waiters
                                    or self._definitions_dirty):
            return
        self._start_commit()

    def _start_commit(self) -> None:
        assert self._loop is not None
        batch = self._ticket
        self._ticket += 1
        fds = [fd for segment in self._to_sync for fd in (segment.fd, segment.ack_fd)]
        self._to_sync.clear()
        dirs = list(self._new_dirs)
        self._new_dirs.clear()
        jobs, self._jobs = self._jobs, []
        definitions = None
        if self._definitions_dirty and self._definitions is not None:
            definitions = json.dumps(self._definitions(), indent=1).encode()
            self._definitions_dirty = False
        self._committing = True
        future = self._loop.run_in_executor(self._io, self._commit, fds, dirs, jobs,
                                            definitions)
        future.add_done_callback(lambda done: self._committed(batch, done))

    def _commit(self, fds: list[int], dirs: list[Path], jobs: list[Callable[[], None]],
                definitions: bytes | None) -> None:
        """On the I/O thread: everything that waits for the disk."""
        for job in jobs:
            job()
        if definitions is not None:
            write_atomically(self.data_dir / "definitions.json", definitions)
        for fd in fds:
            os.fdatasync(fd)
        for directory in dirs:
            fsync_directory(directory)

    def _committed(self, batch: int, done: Future[None] | asyncio.Future[None]) -> None:
        self._committing = False
        error = done.exception()
        if error is not None:
            self._fail(StoreError(f"commit failed: {error}"))
            return
        self.durable_ticket = batch
        ready = [cb for ticket, cb in self._waiters if ticket <= batch]
        self._waiters = [(t, cb) for t, cb in self._waiters if t > batch]
        for callback in ready:
            callback(True)
        if self._written or self._to_sync or self._jobs or self._waiters \
                or self._definitions_dirty:
            self._schedule()

    def _fail(self, error: StoreError) -> None:
        """Sticky: nothing more is confirmed; waiters learn it at once."""
        if self.failed is None:
            log.critical("message store %s failed, no more publishes are confirmed: %s",
                         self.data_dir, error)
        self.failed = error
        waiters, self._waiters = self._waiters, []
        for _, callback in waiters:
            callback(False)

    def close(self) -> None:
        """Write and commit what is pending, then release the directory (blocking)."""
        if self._closed:
            return
        self._closed = True
        if self.failed is None:
            try:
                for segment in self._written:
                    segment.write_pending()
                    self._to_sync.add(segment)
                fds = [fd for s in self._to_sync for fd in (s.fd, s.ack_fd) if not s.closed]
                definitions = None
                if self._definitions_dirty and self._definitions is not None:
                    definitions = json.dumps(self._definitions(), indent=1).encode()
                self._io.submit(self._commit, fds, list(self._new_dirs), self._jobs,
                                definitions).result()
            except OSError as err:
                log.error("final commit of %s failed: %s", self.data_dir, err)
        self._io.shutdown(wait=True)
        for store in self._stores:
            for segment in store.segments():
                segment.close()
        self._stores.clear()
        os.close(self._lock_fd)


class DiskPriorityStore(PriorityQueueStore):
    """A durable priority queue: a sub-directory per level under the queue's directory."""

    def __init__(self, engine: DiskEngine, directory: Path, max_priority: int,
                 levels: dict[int, QueueStore]) -> None:
        super().__init__(max_priority, lambda level: engine._store(directory / f"p{level}"),
                         levels)
        self._engine = engine
        self.directory = directory

    def delete(self) -> None:
        super().delete()
        directory = self.directory
        self._engine._job(lambda: shutil.rmtree(directory, ignore_errors=True))
