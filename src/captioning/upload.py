"""Receive a multipart upload by streaming it to a temporary file, enforcing a size limit.

The request body is fed chunk by chunk to python-multipart's push parser; the `file` part goes
straight to disk and small text parts (the title) are kept, capped. Nothing holds the whole
upload in memory, and an upload over the limit is cut off as soon as it passes it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 4096


class UploadError(ValueError):
    """The request is not an acceptable upload; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Received:
    path: Path  # the caller owns it and must remove or move it
    size: int
    filename: str
    fields: dict[str, str]


class _Collector:
    """python-multipart callbacks: file part to disk, other parts to small buffers."""

    def __init__(self, limit: int, tmp_dir: Path | None) -> None:
        self.limit = limit
        self.tmp_dir = tmp_dir
        self.file: IO[bytes] | None = None
        self.path: Path | None = None
        self.size = 0
        self.filename = ""
        self.fields: dict[str, str] = {}
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._buffer = bytearray()
        self.complete = False

    def callbacks(self) -> Any:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_end": self.on_end}

    def on_end(self) -> None:
        self.complete = True

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file = b"", "", False
        self._buffer.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.file is not None:
                raise UploadError(400, "send one file per upload")
            self._is_file = True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")[:255]
            fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.tmp_dir)
            self.file, self.path = os.fdopen(fd, "wb"), Path(name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            assert self.file is not None
            self.size += end - start
            if self.size > self.limit:
                raise UploadError(413, f"the file is larger than the limit of {self.limit} bytes")
            self.file.write(data[start:end])
        elif len(self._buffer) + end - start <= MAX_FIELD_BYTES:
            self._buffer += data[start:end]
        else:
            raise UploadError(400, f"form field {self._name!r} is too long")

    def on_part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(body: AsyncIterator[bytes], content_type: str, limit: int,
                         tmp_dir: Path | None = None) -> Received:
    """Parse a multipart/form-data body whose `file` part is the upload."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(400, "send the video as multipart/form-data with a 'file' field")
    collector = _Collector(limit, tmp_dir)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as err:
        collector.discard()
        raise UploadError(400, f"malformed multipart body: {err}") from err
    except BaseException:
        collector.discard()
        raise
    if not collector.complete:
        collector.discard()
        raise UploadError(400, "malformed multipart body: it ends before its closing boundary")
    if collector.file is None or collector.path is None:
        raise UploadError(400, "the form has no 'file' field")
    with contextlib.suppress(OSError):
        collector.file.close()
    return Received(collector.path, collector.size, collector.filename, collector.fields)
