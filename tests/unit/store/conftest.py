"""Store fixtures: a disk engine on a temporary directory, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from leveret.core.message import Entry, Message
from leveret.store.disk import DiskEngine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[DiskEngine]:
    disk = DiskEngine(tmp_path / "data")
    yield disk
    disk.close()


def make_entry(seq: int, body: bytes | None = None, persistent: bool = True) -> Entry:
    properties = b"\x10\x00\x02" if persistent else b"\x00\x00"  # delivery_mode 2, or none
    message = Message.from_wire("ex", f"key.{seq}", properties, body or f"body {seq}".encode())
    return Entry(message, seq)


@pytest.fixture
def entries() -> Iterator[list[Entry]]:
    yield [make_entry(seq) for seq in range(1, 11)]
