"""Local-folder and S3 storage behind one interface (captioning.storage).

The same contract runs over both; S3 is moto's server mode on loopback (there is no real S3
server on these machines).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from captioning.storage import (
    LocalStorage,
    S3Storage,
    Storage,
    StoredFileMissing,
    check_key,
    open_storage,
)
from tests.captioning.conftest import S3Server

DATA = bytes(range(256)) * 4096  # 1 MiB: several chunks


def new_key() -> str:
    return f"{uuid.uuid4().hex}.mp4"


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "media")
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        yield S3Storage(s3.new_bucket(), "videos", s3.endpoint)


def test_put_get_size_range_delete(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "upload.part"
    source.write_bytes(DATA)
    key = new_key()
    storage.put_file(key, source)
    assert not source.exists()  # moved or uploaded, never left behind
    assert storage.size(key) == len(DATA)
    copy = tmp_path / "copy.mp4"
    storage.get_file(key, copy)
    assert copy.read_bytes() == DATA
    assert b"".join(storage.iter_range(key, 0, 99)) == DATA[:100]
    assert b"".join(storage.iter_range(key, 300_000, len(DATA) - 1)) == DATA[300_000:]
    storage.delete(key)
    with pytest.raises(StoredFileMissing, match="missing"):
        storage.size(key)


def test_missing_objects(storage: Storage, tmp_path: Path) -> None:
    key = new_key()
    with pytest.raises(StoredFileMissing, match=f"stored file {key} is missing"):
        storage.get_file(key, tmp_path / "x")
    with pytest.raises(StoredFileMissing, match="missing"):
        storage.iter_range(key, 0, 10)
    storage.delete(key)  # no error


@pytest.mark.parametrize("key", ["../etc/passwd", "a.mp4", "x" * 32, f"{'a' * 32}.mp4/../x",
                                 f"{'A' * 32}.mp4"])
def test_keys_must_be_generated_ones(key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        check_key(key)


def test_open_storage_urls(tmp_path: Path, s3_server: S3Server) -> None:
    local = open_storage(f"file://{tmp_path}/m")
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "m"
    s3 = open_storage("s3://bucket/some/prefix", s3_server.endpoint)
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    with pytest.raises(ValueError, match="names no bucket"):
        open_storage("s3:///x")
