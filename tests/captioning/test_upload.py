"""Streaming multipart reception with a size limit (captioning.upload)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from captioning.upload import UploadError, receive_upload

BOUNDARY = "xyzBOUNDARY"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def test_file_goes_to_disk_and_fields_are_kept(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 100
    body = form([("title", None, "Ünïcode title".encode()), ("file", "a.mp4", payload)])
    received = await receive_upload(chunks(body), CONTENT_TYPE, 10**6, tmp_path)
    assert received.path.read_bytes() == payload
    assert received.path.parent == tmp_path
    assert received.size == len(payload)
    assert received.filename == "a.mp4"
    assert received.fields == {"title": "Ünïcode title"}


async def test_over_the_limit_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    body = form([("file", "big.mp4", b"x" * 5000)])
    with pytest.raises(UploadError, match="larger than the limit of 4000 bytes") as caught:
        await receive_upload(chunks(body), CONTENT_TYPE, 4000, tmp_path)
    assert caught.value.status == 413
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content_type", "body", "message"), [
    ("application/json", b"{}", "multipart/form-data"),
    (CONTENT_TYPE, form([("title", None, b"no file")]), "no 'file' field"),
    (CONTENT_TYPE, form([("title", None, b"x" * 5000), ("file", "a", b"1")]), "too long"),
    (CONTENT_TYPE, form([("file", "a", b"1"), ("file", "b", b"2")]), "one file per upload"),
    (CONTENT_TYPE, b"--xyzBOUNDARY\r\ngarbage", "malformed multipart body"),
])
async def test_bad_forms_are_400(tmp_path: Path, content_type: str, body: bytes,
                                 message: str) -> None:
    with pytest.raises(UploadError, match=message) as caught:
        await receive_upload(chunks(body), content_type, 10**6, tmp_path)
    assert caught.value.status == 400
    assert list(tmp_path.iterdir()) == []
