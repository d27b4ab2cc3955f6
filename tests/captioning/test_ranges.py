"""HTTP Range parsing (captioning.ranges)."""

from __future__ import annotations

import pytest

from captioning.ranges import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("", None),
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=100-", ByteRange(100, 999)),
    ("bytes=-100", ByteRange(900, 999)),
    ("bytes=-5000", ByteRange(0, 999)),
    ("bytes=990-5000", ByteRange(990, 999)),
    ("bytes=0-0, 5-9", ByteRange(0, 0)),
    ("items=0-5", None),
    ("bytes=-", None),
])
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable, match=r"bytes \*/1000"):
        parse_range(header, 1000)


def test_content_range() -> None:
    assert ByteRange(0, 99).content_range(1000) == "bytes 0-99/1000"
    assert ByteRange(0, 99).length == 100
