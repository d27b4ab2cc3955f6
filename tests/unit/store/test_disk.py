"""The disk store on real files: group commit, recovery, damaged files, and disk space given
back. Damage is made by editing the files between a close and a recovery, as a crash or a
failing disk would leave them."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from leveret.core.message import Entry
from leveret.store import records
from leveret.store.base import StoreError
from leveret.store.disk import DiskEngine
from leveret.store.segments import SEGMENT_SIZE, DiskQueueStore
from tests.unit.store.conftest import make_entry


async def committed(engine: DiskEngine) -> None:
    """Wait until everything stored so far is durable."""
    done = asyncio.get_running_loop().create_future()
    engine.when_durable(engine.ticket(), done.set_result)
    assert await asyncio.wait_for(done, 10) is True


async def fill(engine: DiskEngine, count: int, name: str = "q", size: int = 16
               ) -> DiskQueueStore:
    store = engine.open_queue("/", name, durable=True)
    assert isinstance(store, DiskQueueStore)
    for seq in range(1, count + 1):
        store.push(make_entry(seq, f"{seq:0{size}d}".encode()))
    await committed(engine)
    return store


def reopen(data: Path) -> tuple[DiskEngine, list[tuple[dict[str, object], DiskQueueStore]]]:
    engine = DiskEngine(data)
    return engine, [(meta, store) for meta, store, _ in engine.recover_queues()]


def seqs(store: DiskQueueStore) -> list[tuple[int, bool]]:
    out = []
    while (entry := store.pop()) is not None:
        out.append((entry.seq, entry.redelivered))
    return out


def segment_files(store: DiskQueueStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir() if p.suffix == ".seg")


async def test_a_batch_is_durable_only_after_its_commit(engine: DiskEngine) -> None:
    store = engine.open_queue("/", "q", durable=True)
    store.push(make_entry(1))
    ticket = engine.ticket()
    assert engine.durable_ticket < ticket
    calls: list[bool] = []
    engine.when_durable(ticket, calls.append)
    assert calls == []  # nothing is confirmed inside the iteration that stored it
    await committed(engine)
    assert calls == [True]
    assert engine.durable_ticket >= ticket


async def test_recovery_restores_order_acks_and_redelivered_flags(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 10)
    taken = [store.pop() for _ in range(4)]
    for entry in taken[:2]:
        assert entry is not None
        store.settle(entry)  # 1 and 2 acked; 3 and 4 delivered and held at the "crash"
    await committed(engine)
    engine.close()
    engine, found = reopen(data)
    (meta, recovered), = found
    assert meta["name"] == "q"
    assert seqs(recovered) == [(3, True), (4, True)] + [(s, False) for s in range(5, 11)]
    engine.close()


async def test_transient_messages_are_not_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = engine.open_queue("/", "q", durable=True)
    store.push(make_entry(1, persistent=False))
    store.push(make_entry(2))
    await committed(engine)
    engine.close()
    engine, [(_, recovered)] = reopen(data)
    assert seqs(recovered) == [(2, False)]
    engine.close()


async def test_a_torn_tail_is_truncated_and_reported(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 10)
    segment = store.directory / "00000001.seg"
    engine.close()
    size = segment.stat().st_size
    os.truncate(segment, size - 5)  # the last record was half written when the power went
    with caplog.at_level(logging.WARNING):
        engine, [(_, recovered)] = reopen(data)
    assert [s for s, _ in seqs(recovered)] == list(range(1, 10))
    assert "1 damaged record(s) dropped" in caplog.text
    assert segment.stat().st_size < size - 5  # truncated at the last good record
    engine.close()


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def record_offsets(path: Path) -> list[int]:
    return [r[0] for r in records.scan_segment(path.read_bytes()).records]


@pytest.mark.parametrize("where", ["body", "head"])
async def test_flipped_bytes_in_the_middle_lose_one_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 10)
    segment = store.directory / "00000001.seg"
    engine.close()
    fifth = record_offsets(segment)[4]
    flip(segment, fifth + (records.HEAD_SIZE + 12 if where == "body" else 1))
    with caplog.at_level(logging.WARNING):
        engine, [(_, recovered)] = reopen(data)
    assert [s for s, _ in seqs(recovered)] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert "1 damaged record(s) dropped" in caplog.text
    engine.close()


async def test_damage_after_recovery_is_caught_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 3000)  # beyond the window: most records are read back later
    segment = store.directory / "00000001.seg"
    flip(segment, record_offsets(segment)[2500] + records.HEAD_SIZE + 20)
    with caplog.at_level(logging.ERROR):
        got = [entry.seq for entry in iter(store.pop, None)]
    assert 2501 not in got
    assert len(got) == 2999
    assert "1 message(s) lost to a record that fails its checksum" in caplog.text
    engine.close()


async def test_an_unreadable_segment_is_set_aside(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 5)
    segment = store.directory / "00000001.seg"
    engine.close()
    segment.write_bytes(b"garbage" * 100)
    with caplog.at_level(logging.ERROR):
        engine, [(_, recovered)] = reopen(data)
    assert seqs(recovered) == []
    assert (store.directory / "00000001.seg.bad").exists()
    assert "not a Leveret segment file" in caplog.text
    recovered.push(make_entry(100))  # the queue goes on in a new segment
    await committed(engine)
    engine.close()


async def test_a_damaged_ack_log_keeps_what_it_can(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = DiskEngine(data)
    store = await fill(engine, 5)
    for entry in [store.pop() for _ in range(3)]:
        assert entry is not None
        store.settle(entry)
    await committed(engine)
    engine.close()
    acks = store.directory / "00000001.acks"
    raw = acks.read_bytes()
    acks.write_bytes(raw[:-4])  # the last ack record is torn
    engine, [(_, recovered)] = reopen(data)
    # The torn ack is lost: its message comes back (at least once), flagged redelivered.
    assert seqs(recovered) == [(3, True), (4, False), (5, False)]
    engine.close()


async def test_fully_acked_segments_give_their_space_back(engine: DiskEngine) -> None:
    size = 64 * 1024
    store = await fill(engine, (3 * SEGMENT_SIZE) // size, size=size)
    assert len(segment_files(store)) >= 3
    while (entry := store.pop()) is not None:
        store.settle(entry)
    await committed(engine)
    assert segment_files(store) == segment_files(store)[-1:]  # only the active one is left


async def test_purge_drops_whole_segments_without_reading_them(engine: DiskEngine) -> None:
    size = 64 * 1024
    store = await fill(engine, (3 * SEGMENT_SIZE) // size, size=size)
    assert store.purge() == (3 * SEGMENT_SIZE) // size
    await committed(engine)
    assert len(segment_files(store)) == 1


async def test_deleting_a_queue_removes_its_directory(engine: DiskEngine) -> None:
    store = await fill(engine, 3)
    store.delete()
    await committed(engine)
    assert not store.directory.exists()


async def test_a_data_directory_serves_one_broker(engine: DiskEngine) -> None:
    with pytest.raises(StoreError, match="in use by another broker"):
        DiskEngine(engine.data_dir)


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("99\n")
    with pytest.raises(StoreError, match="format version 99"):
        DiskEngine(tmp_path)


async def test_a_failed_commit_is_sticky_and_reported(engine: DiskEngine,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = engine.open_queue("/", "q", durable=True)
    await committed(engine)
    assert isinstance(store, DiskQueueStore)
    store.push(make_entry(1))
    for segment in store.segments():
        os.close(segment.fd)  # the next write fails as a failing disk would make it
    results: list[bool] = []
    with caplog.at_level(logging.CRITICAL):
        engine.when_durable(engine.ticket(), results.append)
        await asyncio.sleep(0.1)
    assert results == [False]
    assert "no more publishes are confirmed" in caplog.text
    later: list[bool] = []
    engine.when_durable(engine.ticket(), later.append)
    assert later == [False]
    for segment in store.segments():
        segment.fd = os.open(os.devnull, os.O_RDONLY)  # so that close() has something to close


def test_entries_keep_their_position(entries: list[Entry]) -> None:
    assert all(entry.position == -1 for entry in entries)
