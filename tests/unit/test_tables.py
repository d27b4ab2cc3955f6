"""Unit tests for leveret.core.tables, the AMQP 0-9-1 field-table codec.

Wire forms are written as byte literals; `_table` only adds the 4-byte length prefix so that
each case shows the bytes that matter. No I/O, no broker.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.core.tables import (
    MAX_DEPTH,
    TableError,
    Timestamp,
    check_depth,
    decode_array,
    decode_table,
    encode_table,
    encode_value,
)


def _table(body: bytes) -> bytes:
    """A field table: the 4-byte big-endian length, then ``body``."""
    return struct.pack(">I", len(body)) + body


def _nested(levels: int) -> dict[str, Any]:
    """A table holding ``levels`` tables nested one inside the other."""
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"k": value}
    return value


# -- decoding every type tag -----------------------------------------------------------------

TAGGED_VALUES = [
    pytest.param(b"t\x01", True, id="t-true"),
    pytest.param(b"t\x00", False, id="t-false"),
    pytest.param(b"b\xff", -1, id="b-int8"),
    pytest.param(b"B\xff", 255, id="B-uint8"),
    pytest.param(b"s\xff\xfe", -2, id="s-int16"),
    pytest.param(b"u\xff\xfe", 65534, id="u-uint16"),
    pytest.param(b"I\xff\xff\xff\xfe", -2, id="I-int32"),
    pytest.param(b"i\xff\xff\xff\xfe", 4294967294, id="i-uint32"),
    pytest.param(b"l\xff\xff\xff\xff\xff\xff\xff\xfe", -2, id="l-int64"),
    pytest.param(b"L\xff\xff\xff\xff\xff\xff\xff\xfe", 2**64 - 2, id="L-uint64"),
    pytest.param(b"f\x3f\xc0\x00\x00", 1.5, id="f-float32"),
    pytest.param(b"d\xc0\x04\x00\x00\x00\x00\x00\x00", -2.5, id="d-float64"),
    pytest.param(b"D\x02\x00\x00\x01\x3b", Decimal("3.15"), id="D-decimal"),
    pytest.param(b"D\x00\xff\xff\xff\xf9", Decimal("-7"), id="D-negative"),
    pytest.param(b"S\x00\x00\x00\x06h\xc3\xa9llo", "h\u00e9llo", id="S-utf8"),
    pytest.param(b"S\x00\x00\x00\x02\xff\xfe", b"\xff\xfe", id="S-not-utf8-stays-bytes"),
    pytest.param(b"x\x00\x00\x00\x03\x00\xffa", b"\x00\xffa", id="x-bytes"),
    pytest.param(b"A\x00\x00\x00\x05b\x01t\x01V", [1, True, None], id="A-array"),
    pytest.param(b"A\x00\x00\x00\x00", [], id="A-empty"),
    pytest.param(b"T\x00\x00\x00\x00\x5f\x5e\x10\x00", Timestamp(1600000000), id="T-timestamp"),
    pytest.param(b"F\x00\x00\x00\x07\x01aS\x00\x00\x00\x00", {"a": ""}, id="F-table"),
    pytest.param(b"V", None, id="V-void"),
]


@pytest.mark.parametrize(("wire", "expected"), TAGGED_VALUES)
def test_decode_each_type_tag(wire: bytes, expected: Any) -> None:
    data = _table(b"\x03key" + wire)
    table, end = decode_table(data)
    assert table == {"key": expected}
    assert type(table["key"]) is type(expected)
    assert end == len(data)


def test_decode_table_with_several_entries_and_offset() -> None:
    data = b"junk" + b"\x00\x00\x00\x0c" + b"\x01at\x01" + b"\x02bbI\x00\x00\x00\x2a" + b"tail"
    table, end = decode_table(data, 4)
    assert table == {"a": True, "bb": 42}
    assert data[end:] == b"tail"


def test_decode_empty_table_and_array() -> None:
    assert decode_table(b"\x00\x00\x00\x00") == ({}, 4)
    assert decode_array(b"\x00\x00\x00\x00") == ([], 4)


def test_decode_array_of_mixed_values() -> None:
    data = b"\x00\x00\x00\x0b" + b"S\x00\x00\x00\x01a" + b"B\x07" + b"V" + b"t\x00"
    assert decode_array(data) == (["a", 7, None, False], 15)


def test_timestamp_decodes_as_timestamp_and_reencodes_as_t() -> None:
    wire = b"T\x00\x00\x00\x00\x5f\x5e\x10\x00"
    value = decode_table(_table(b"\x01t" + wire))[0]["t"]
    assert isinstance(value, Timestamp)
    assert encode_value(value) == wire
    assert encode_value(1600000000) == b"I\x5f\x5e\x10\x00"


# -- encoding ------------------------------------------------------------------------------

ENCODED = [
    pytest.param(True, b"t\x01", id="bool"),
    pytest.param(-1, b"I\xff\xff\xff\xff", id="int32"),
    pytest.param(2**31, b"l\x00\x00\x00\x00\x80\x00\x00\x00", id="int64"),
    pytest.param(-2.5, b"d\xc0\x04\x00\x00\x00\x00\x00\x00", id="float"),
    pytest.param("h\u00e9", b"S\x00\x00\x00\x03h\xc3\xa9", id="str"),
    pytest.param(b"\x00", b"x\x00\x00\x00\x01\x00", id="bytes"),
    pytest.param(bytearray(b"ab"), b"x\x00\x00\x00\x02ab", id="bytearray"),
    pytest.param(None, b"V", id="none"),
    pytest.param(Decimal("3.15"), b"D\x02\x00\x00\x01\x3b", id="decimal"),
    pytest.param(Decimal("-7"), b"D\x00\xff\xff\xff\xf9", id="decimal-negative"),
    pytest.param((1, "a"), b"A\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01a", id="tuple"),
    pytest.param({"k": None}, b"F\x00\x00\x00\x03\x01kV", id="mapping"),
]


@pytest.mark.parametrize(("value", "wire"), ENCODED)
def test_encode_value_uses_rabbitmq_tags(value: Any, wire: bytes) -> None:
    assert encode_value(value) == wire


def test_encode_table_byte_literal() -> None:
    assert encode_table({"a": 1, "b": "x"}) == (
        b"\x00\x00\x00\x0f" + b"\x01aI\x00\x00\x00\x01" + b"\x01bS\x00\x00\x00\x01x"
    )
    assert encode_table(None) == b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("wire", "expected"), [p for p in TAGGED_VALUES if p.id != "L-uint64"]
)
def test_round_trip_of_decoded_values(wire: bytes, expected: Any) -> None:
    # Values decoded from any tag re-encode (maybe under another tag) to the same value;
    # uint64 beyond int64 has no encoding (see test_encode_rejects_unencodable_values).
    data = encode_table({"key": expected})
    assert decode_table(data) == ({"key": expected}, len(data))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param({1, 2}, "cannot encode set in a field table", id="set"),
        pytest.param(object(), "cannot encode object in a field table", id="object"),
        pytest.param(1j, "cannot encode complex in a field table", id="complex"),
        pytest.param(2**64, "does not fit in 64 bits", id="beyond-uint64"),
        pytest.param(-(2**63) - 1, "does not fit in 64 bits", id="int-too-small"),
        pytest.param(Decimal("NaN"), "cannot be encoded", id="decimal-nan"),
        pytest.param(Decimal("1E+3"), "cannot be encoded", id="decimal-positive-exponent"),
        pytest.param({"k": [set()]}, "cannot encode set", id="nested-set"),
    ],
)
def test_encode_rejects_unencodable_values(value: Any, message: str) -> None:
    with pytest.raises(TableError, match=message):
        encode_table({"key": value})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(Decimal(2**31), id="decimal-unscaled-beyond-int32"),
        pytest.param(Timestamp(-1), id="negative-timestamp"),
        pytest.param(Timestamp(2**64), id="timestamp-beyond-uint64"),
    ],
)
def test_encode_out_of_range_values_raise_table_error(value: Any) -> None:
    # The codec's contract is TableError for anything it cannot encode, never struct.error.
    with pytest.raises(TableError, match=r"cannot be encoded|does not fit"):
        encode_value(value)


def test_encode_rejects_keys_longer_than_255_bytes() -> None:
    assert decode_table(encode_table({"k" * 255: 1}))[0] == {"k" * 255: 1}
    with pytest.raises(TableError, match="field table key longer than 255 bytes"):
        encode_table({"k" * 256: 1})
    with pytest.raises(TableError, match="field table key longer than 255 bytes"):
        encode_table({"\u00e9" * 128: 1})  # 128 characters, 256 bytes of UTF-8


# -- malformed input -----------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"\x00\x00\x00", "field table length runs past the end", id="short-length"),
    pytest.param(b"\x00\x00\x00\x10\x01kV", "field table length runs past the end",
                 id="length-past-end"),
    pytest.param(b"\x00\x00\x00\x03\x05abc", "key runs past the end", id="key-past-end"),
    pytest.param(b"\x00\x00\x00\x03\x01kZ", "unknown field value type 'Z'", id="unknown-tag"),
    pytest.param(b"\x00\x00\x00\x03\x01\xffV", "key is not valid UTF-8", id="bad-utf8-key"),
    pytest.param(b"\x00\x00\x00\x02\x01k", "field value type is missing", id="missing-tag"),
    pytest.param(b"\x00\x00\x00\x04\x01kI\x00", "field value 'I' runs past the end",
                 id="truncated-int32"),
    pytest.param(b"\x00\x00\x00\x09\x01kd\x00\x00\x00\x00\x00\x00",
                 "field value 'd' runs past the end", id="truncated-double"),
    pytest.param(b"\x00\x00\x00\x03\x01kt", "boolean runs past the end", id="truncated-bool"),
    pytest.param(b"\x00\x00\x00\x05\x01kS\x00\x00", "long string length runs past the end",
                 id="truncated-longstr-length"),
    pytest.param(b"\x00\x00\x00\x08\x01kS\x00\x00\x00\x09a", "long string runs past the end",
                 id="longstr-past-end"),
    pytest.param(b"\x00\x00\x00\x08\x01kx\x00\x00\x00\x02a", "long string runs past the end",
                 id="bytes-past-end"),
    pytest.param(b"\x00\x00\x00\x07\x01kT\x00\x00\x00\x00", "timestamp runs past the end",
                 id="truncated-timestamp"),
    pytest.param(b"\x00\x00\x00\x06\x01kD\x02\x00\x00", "decimal runs past the end",
                 id="truncated-decimal"),
    pytest.param(b"\x00\x00\x00\x05\x01kF\x00\x00", "field table length runs past the end",
                 id="truncated-nested-table"),
    pytest.param(b"\x00\x00\x00\x07\x01kA\x00\x00\x00\x05", "field array length runs past",
                 id="array-past-end"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_table_raises_table_error(data: bytes, message: str) -> None:
    with pytest.raises(TableError, match=message):
        decode_table(data)


def test_nested_table_cannot_reach_past_its_parent() -> None:
    # The inner table claims 6 bytes; the data has them, but the outer table ends first.
    data = b"\x00\x00\x00\x07\x01kF\x00\x00\x00\x06" + b"\x01aV\x01bV"
    with pytest.raises(TableError, match="field table length runs past the end"):
        decode_table(data)


def test_value_crossing_the_table_end_is_refused() -> None:
    # The table says 4 bytes; its int32 needs 7. The bytes after the table must not be read.
    data = b"\x00\x00\x00\x04\x01kI\x00" + b"\x00\x00\x01"
    with pytest.raises(TableError, match="field value 'I' runs past the end"):
        decode_table(data)


def test_malformed_array_raises_table_error() -> None:
    with pytest.raises(TableError, match="field value 'I' runs past the end"):
        decode_array(b"\x00\x00\x00\x02I\x00")
    with pytest.raises(TableError, match="field array length runs past the end"):
        decode_array(b"\x00\x00\x00\x09V")
    with pytest.raises(TableError, match="unknown field value type '\\?'"):
        decode_array(b"\x00\x00\x00\x01?")


# -- nesting depth -------------------------------------------------------------------------


def test_nesting_up_to_max_depth_decodes() -> None:
    value = _nested(MAX_DEPTH)
    assert decode_table(encode_table(value))[0] == value
    check_depth(value)


def test_nesting_deeper_than_max_depth_is_refused() -> None:
    data = encode_table(_nested(MAX_DEPTH + 1))
    with pytest.raises(TableError, match=f"nested deeper than {MAX_DEPTH} levels"):
        decode_table(data)
    with pytest.raises(TableError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_depth(_nested(MAX_DEPTH + 1))


def test_arrays_count_towards_depth() -> None:
    value: Any = []
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(TableError, match="nested deeper than"):
        decode_array(encode_value(value)[1:])
    with pytest.raises(TableError, match="nested deeper than"):
        check_depth(value)
    check_depth(value[0])
    assert decode_array(encode_value(value[0])[1:])[0] == value[0]


def test_hostile_nesting_far_past_the_limit_is_refused_without_recursion_error() -> None:
    # 10,000 levels of <len> b"\x01kF": a decoder without a depth limit would overflow
    # Python's stack. Level j's body is 7 * j bytes (3 for b"\x01kF", 4 + 7 * (j - 1) below).
    levels = 10_000
    data = b"".join(struct.pack(">I", 7 * j) + b"\x01kF" for j in range(levels, 0, -1))
    data += b"\x00\x00\x00\x00"
    assert struct.unpack_from(">I", data)[0] == len(data) - 4
    with pytest.raises(TableError, match="nested deeper than"):
        decode_table(data)


def test_check_depth_accepts_scalars_and_flat_containers() -> None:
    check_depth(1)
    check_depth("s")
    check_depth({"a": [1, 2, {"b": None}]})
    check_depth(("t", "u"))


# -- size: decoding is linear --------------------------------------------------------------


def test_128_kib_of_empty_entries_decodes() -> None:
    # 65,536 entries "" -> void: pamqp's decoder copies the buffer per value (quadratic).
    body = b"\x00V" * (64 * 1024)
    table, end = decode_table(_table(body))
    assert table == {"": None}
    assert end == 4 + 128 * 1024


def test_128_kib_of_distinct_tiny_entries_decodes() -> None:
    count = 128 * 1024 // 6  # 21,845 entries of 6 bytes: b"\x04", 4 hex digits, b"V"
    body = b"".join(b"\x04" + f"{i:04x}".encode() + b"V" for i in range(count))
    table, _ = decode_table(_table(body))
    assert len(table) == count
    assert table["0000"] is None
    assert f"{count - 1:04x}" in table
    array, end = decode_array(_table(b"V" * (128 * 1024)))
    assert len(array) == 128 * 1024
    assert end == 4 + 128 * 1024


# -- property: decode(encode(v)) == v ------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types (True is not 1, Timestamp is not int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.integers(min_value=0, max_value=2**64 - 1).map(Timestamp)
    | st.builds(lambda unscaled, scale: Decimal(unscaled).scaleb(-scale),
                st.integers(min_value=-(2**31), max_value=2**31 - 1),
                st.integers(min_value=0, max_value=20))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=10), _VALUES, max_size=6))
def test_property_decode_inverts_encode(table: dict[str, Any]) -> None:
    data = encode_table(table)
    decoded, end = decode_table(data)
    assert end == len(data)
    assert _same(decoded, table), (decoded, table)


def test_unsigned_64_bit_integers_round_trip_as_l_upper() -> None:
    # An 'L' decodes to an int up to 2**64 - 1; it must encode back to 'L' (durable arguments).
    data = b"\x00\x00\x00\x0b\x01aL\xff\xff\xff\xff\xff\xff\xff\xfe"
    table, _ = decode_table(data)
    assert table == {"a": 2**64 - 2}
    assert encode_table(table) == data
