"""HTTP Range header parsing for /media (RFC 9110 section 14): one byte range per request.

Browsers ask for `bytes=N-` to seek; we answer one range (the first) and ignore multi-range
requests' extra ranges, which servers may do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?$")


class RangeNotSatisfiable(ValueError):
    """The range lies outside the file (answer 416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The requested range clipped to the file, or None for "send the whole file" (no header,
    or one we do not understand, which RFC 9110 says to ignore)."""
    if not header:
        return None
    match = RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(f"bytes */{size}")
        return ByteRange(max(0, size - length), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"bytes */{size}")
    return ByteRange(start, end)
