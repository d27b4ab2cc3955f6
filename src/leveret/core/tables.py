"""AMQP 0-9-1 field tables and arrays: a strict, linear-time codec.

Field tables are the broker's canonical form for message headers and for declare/bind/consume
arguments, so they live in `core` and are used by `amqp.framing`. This module does no I/O.

Why not pamqp's decoder: it copies the rest of the buffer for every value (quadratic in the
number of fields: a 128 KiB table of empty entries costs seconds), recurses without a depth
limit, lets a timestamp overflow escape as OverflowError and silently truncates a short string
whose length points past the end. A broker must treat every table as hostile input.

Type tags follow RabbitMQ's errata (https://www.rabbitmq.com/amqp-0-9-1-errata.html):
``t`` bool, ``b``/``B`` int8/uint8, ``s``/``u`` int16/uint16, ``I``/``i`` int32/uint32,
``l`` int64, ``L`` uint64, ``f``/``d`` float32/float64, ``D`` decimal, ``S`` long string,
``x`` byte array, ``A`` array, ``T`` timestamp, ``F`` table, ``V`` void.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of tables and arrays accepted (RabbitMQ has no limit; Python's stack does)."""

FieldValue = Any
FieldTable = dict[str, FieldValue]


class TableError(ValueError):
    """A field table or array is malformed or too deeply nested."""


class Timestamp(int):
    """A ``T`` value: seconds since the epoch, kept apart from plain ints to re-encode as ``T``."""

    __slots__ = ()


_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")

# Fixed-size scalar types: tag -> struct.
_FIXED: dict[int, struct.Struct] = {
    ord("b"): struct.Struct(">b"),
    ord("B"): struct.Struct(">B"),
    ord("s"): struct.Struct(">h"),
    ord("u"): struct.Struct(">H"),
    ord("I"): struct.Struct(">i"),
    ord("i"): struct.Struct(">I"),
    ord("l"): struct.Struct(">q"),
    ord("L"): struct.Struct(">Q"),
    ord("f"): struct.Struct(">f"),
    ord("d"): struct.Struct(">d"),
}
_DECIMAL = struct.Struct(">Bi")
_TIMESTAMP = struct.Struct(">Q")


def decode_table(data: bytes, offset: int = 0) -> tuple[FieldTable, int]:
    """Decode the table (4-byte length, then entries) at ``offset``; return it and its end."""
    return _table(data, offset, len(data), 0)


def decode_array(data: bytes, offset: int = 0) -> tuple[list[FieldValue], int]:
    """Decode the array (4-byte length, then tagged values) at ``offset``."""
    return _array(data, offset, len(data), 0)


def _table(data: bytes, offset: int, limit: int, depth: int) -> tuple[FieldTable, int]:
    end = _sized_end(data, offset, limit, "table")
    table: FieldTable = {}
    pos = offset + 4
    while pos < end:
        key_len = data[pos]
        pos += 1
        if pos + key_len > end:
            raise TableError("field table key runs past the end of the table")
        try:
            key = data[pos : pos + key_len].decode()
        except UnicodeDecodeError as err:
            raise TableError("field table key is not valid UTF-8") from err
        pos += key_len
        table[key], pos = _decode_value(data, pos, end, depth)
    if pos != end:
        raise TableError("field table value runs past the end of the table")
    return table, end


def _array(data: bytes, offset: int, limit: int, depth: int) -> tuple[list[FieldValue], int]:
    end = _sized_end(data, offset, limit, "array")
    values: list[FieldValue] = []
    pos = offset + 4
    while pos < end:
        value, pos = _decode_value(data, pos, end, depth)
        values.append(value)
    if pos != end:
        raise TableError("field array value runs past the end of the array")
    return values, end


def _sized_end(data: bytes, offset: int, limit: int, what: str) -> int:
    if offset + 4 > limit:
        raise TableError(f"field {what} length runs past the end of the data")
    end: int = offset + 4 + _U32.unpack_from(data, offset)[0]
    if end > limit:
        raise TableError(f"field {what} length runs past the end of the data")
    return end


def _decode_value(data: bytes, pos: int, end: int, depth: int) -> tuple[FieldValue, int]:
    if pos >= end:
        raise TableError("field value type is missing")
    tag = data[pos]
    pos += 1
    fixed = _FIXED.get(tag)
    if fixed is not None:
        if pos + fixed.size > end:
            raise TableError(f"field value {chr(tag)!r} runs past the end")
        return fixed.unpack_from(data, pos)[0], pos + fixed.size
    if tag in {83, 120}:  # 'S' long string, 'x' byte array
        if pos + 4 > end:
            raise TableError("long string length runs past the end")
        stop = pos + 4 + _U32.unpack_from(data, pos)[0]
        if stop > end:
            raise TableError("long string runs past the end")
        raw = data[pos + 4 : stop]
        if tag == 0x78:
            return raw, stop
        try:
            return raw.decode(), stop
        except UnicodeDecodeError:
            return raw, stop
    if tag == 0x74:  # 't'
        if pos + 1 > end:
            raise TableError("boolean runs past the end")
        return data[pos] != 0, pos + 1
    if tag == 0x56:  # 'V'
        return None, pos
    if tag in {70, 65}:  # 'F' table, 'A' array
        if depth >= MAX_DEPTH:
            raise TableError(f"field tables nested deeper than {MAX_DEPTH} levels")
        if tag == 0x46:
            return _table(data, pos, end, depth + 1)
        return _array(data, pos, end, depth + 1)
    if tag == 0x54:  # 'T'
        if pos + 8 > end:
            raise TableError("timestamp runs past the end")
        return Timestamp(_TIMESTAMP.unpack_from(data, pos)[0]), pos + 8
    if tag == 0x44:  # 'D'
        if pos + 5 > end:
            raise TableError("decimal runs past the end")
        scale, unscaled = _DECIMAL.unpack_from(data, pos)
        return Decimal(unscaled).scaleb(-scale), pos + 5
    raise TableError(f"unknown field value type {chr(tag)!r}")


def check_depth(value: FieldValue, depth: int = 0) -> None:
    """Raise TableError if ``value`` nests tables or arrays deeper than MAX_DEPTH."""
    if isinstance(value, Mapping):
        children: Sequence[FieldValue] = list(value.values())
    elif isinstance(value, list | tuple):
        children = value
    else:
        return
    if depth > MAX_DEPTH:
        raise TableError(f"field tables nested deeper than {MAX_DEPTH} levels")
    for child in children:
        check_depth(child, depth + 1)


def encode_table(table: Mapping[str, FieldValue] | None) -> bytes:
    """Encode a mapping as a field table, length prefix included."""
    parts: list[bytes] = []
    for key, value in (table or {}).items():
        raw_key = key.encode()
        if len(raw_key) > 255:
            raise TableError(f"field table key longer than 255 bytes: {key[:40]!r}...")
        parts.append(_U8.pack(len(raw_key)) + raw_key)
        parts.append(encode_value(value))
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def encode_value(value: FieldValue) -> bytes:
    """Encode one tagged value. Python types map to the tags RabbitMQ itself uses."""
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, Timestamp):
        if not 0 <= value < 2**64:
            raise TableError(f"timestamp {int(value)} does not fit in 64 unsigned bits")
        return b"T" + _TIMESTAMP.pack(value)
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"I" + _FIXED[ord("I")].pack(value)
        if -(2**63) <= value < 2**63:
            return b"l" + _FIXED[ord("l")].pack(value)
        if 0 <= value < 2**64:  # what an 'L' decodes to, so it round-trips
            return b"L" + _FIXED[ord("L")].pack(value)
        raise TableError(f"integer {value} does not fit in 64 bits")
    if isinstance(value, float):
        return b"d" + _FIXED[ord("d")].pack(value)
    if isinstance(value, str):
        raw = value.encode()
        return b"S" + _U32.pack(len(raw)) + raw
    if isinstance(value, bytes | bytearray):
        return b"x" + _U32.pack(len(value)) + bytes(value)
    if isinstance(value, Mapping):
        return b"F" + encode_table(value)
    if isinstance(value, list | tuple):
        body = b"".join(encode_value(item) for item in value)
        return b"A" + _U32.pack(len(body)) + body
    if value is None:
        return b"V"
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int) or not 0 <= -exponent <= 255:
            raise TableError(f"decimal {value} cannot be encoded")
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        if not -(2**31) <= unscaled < 2**31:
            raise TableError(f"decimal {value} does not fit: its digits need more than 32 bits")
        return b"D" + _DECIMAL.pack(-exponent, unscaled)
    raise TableError(f"cannot encode {type(value).__name__} in a field table")


def table_entries(data: bytes, offset: int = 0) -> list[tuple[str, bytes]]:
    """A table's entries as (key, tagged value bytes), the values left encoded, so that a table
    can be edited without re-encoding (and retyping) the values it does not change."""
    end = _sized_end(data, offset, len(data), "table")
    entries: list[tuple[str, bytes]] = []
    pos = offset + 4
    while pos < end:
        key_len = data[pos]
        key = data[pos + 1 : pos + 1 + key_len].decode()
        start = pos + 1 + key_len
        _, pos = _decode_value(data, start, end, 0)
        entries.append((key, bytes(data[start:pos])))
    return entries


def build_table(entries: list[tuple[str, bytes]]) -> bytes:
    """A table from (key, tagged value bytes) entries, length prefix included."""
    body = b"".join(_U8.pack(len(raw := key.encode())) + raw + value for key, value in entries)
    return _U32.pack(len(body)) + body


def decode_value(tagged: bytes) -> FieldValue:
    """Decode one tagged value (as `table_entries` returns them)."""
    value, end = _decode_value(tagged, 0, len(tagged), 0)
    if end != len(tagged):
        raise TableError("bytes after the field value")
    return value
