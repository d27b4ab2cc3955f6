"""On-disk layouts of the segment store: message records and ack-log records. Pure functions,
no I/O: bytes in, values out, and back.

A queue's messages live in numbered segment files (``00000001.seg``); what happened to them
lives beside each segment in an ack log (``00000001.acks``). Both are append-only.

Segment file::

    header   16 bytes   b"LVRTSEG" + version (1 byte) + 8 reserved zero bytes
    record*
      0   u32  length        bytes of the body section that follows the 12-byte head
      4   u32  body_crc      crc32 of the body section
      8   u32  head_crc      crc32 of bytes 0..8, so a damaged length is never trusted
      12  body section:
          u8   flags         bit 0: persistent
          u64  seq           the message's place in its queue
          u64  timestamp_ms  when the queue received it (ms since the epoch)
          u64  deadline_ms   when it expires, or is due (delayed messages); 0: never
          u8   len, exchange          (UTF-8)
          u8   len, routing key       (UTF-8)
          u32  len, properties        (the AMQP properties block, as published)
          ...  body                   (the rest)

Ack log: fixed 9-byte records ``u32 crc32(next 5 bytes) | u8 kind | u32 value``. Kind 1 (ACK):
the record at offset ``value`` of the segment is settled. Kind 2 (DELIVERED): every record of
the segment up to and including offset ``value`` has been delivered at least once.

A reader trusts nothing it has not checked: a record whose head checksum fails ends the
readable part of a segment unless a later valid record can be found (`scan_segment` resyncs);
a record whose body checksum fails is skipped and counted as lost.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SEGMENT_MAGIC = b"LVRTSEG"
FORMAT_VERSION = 1
SEGMENT_HEADER = SEGMENT_MAGIC + bytes([FORMAT_VERSION]) + bytes(8)
HEADER_SIZE = len(SEGMENT_HEADER)

HEAD = struct.Struct(">III")
HEAD_SIZE = HEAD.size
_HEAD_PREFIX = struct.Struct(">II")
_FIXED = struct.Struct(">BQQQ")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_MIN_BODY = _FIXED.size + 1 + 1 + 4
_HEAD_SEED = 0x4C565254  # "LVRT": a head checksum differs from a body checksum of the same bytes

ACK_RECORD = struct.Struct(">IBI")
ACK_SIZE = ACK_RECORD.size
ACK, DELIVERED = 1, 2

FLAG_PERSISTENT = 1


class RecordError(ValueError):
    """A record or header does not check out."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What a segment record holds."""

    seq: int
    timestamp_ms: int
    deadline_ms: int
    persistent: bool
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


def encode_record(message: StoredMessage) -> bytes:
    return encode_fields(message.seq, message.timestamp_ms, message.deadline_ms,
                         message.persistent, message.exchange, message.routing_key,
                         message.properties, message.body)


def encode_fields(seq: int, timestamp_ms: int, deadline_ms: int, persistent: bool,
                  exchange: str, routing_key: str, properties: bytes, body: bytes) -> bytes:
    """A whole record (head and body section); the hot path of a persistent publish."""
    raw_exchange = exchange.encode()
    raw_key = routing_key.encode()
    section = b"".join((
        _FIXED.pack(persistent, seq, timestamp_ms, deadline_ms),
        _U8.pack(len(raw_exchange)), raw_exchange, _U8.pack(len(raw_key)), raw_key,
        _U32.pack(len(properties)), properties, body,
    ))
    prefix = _HEAD_PREFIX.pack(len(section), zlib.crc32(section))
    return b"".join((prefix, _U32.pack(zlib.crc32(prefix, _HEAD_SEED)), section))


def read_head(data: bytes | memoryview, offset: int) -> tuple[int, int] | None:
    """The (body length, body crc) of the record head at ``offset``, or None if it is damaged
    or incomplete."""
    if offset + HEAD_SIZE > len(data):
        return None
    length, body_crc, head_crc = HEAD.unpack_from(data, offset)
    if zlib.crc32(bytes(data[offset : offset + 8]), _HEAD_SEED) != head_crc:
        return None
    if length < _MIN_BODY:
        return None
    return length, body_crc


def decode_body(body: bytes | memoryview) -> StoredMessage:
    """Decode a body section whose checksum has been verified."""
    try:
        flags, seq, timestamp_ms, deadline_ms = _FIXED.unpack_from(body, 0)
        pos = _FIXED.size
        end = pos + 1 + body[pos]
        exchange = bytes(body[pos + 1 : end]).decode()
        pos = end
        end = pos + 1 + body[pos]
        routing_key = bytes(body[pos + 1 : end]).decode()
        pos = end
        end = pos + 4 + _U32.unpack_from(body, pos)[0]
        properties = bytes(body[pos + 4 : end])
        if end > len(body):
            raise RecordError("properties run past the end of the record")
    except (IndexError, struct.error, UnicodeDecodeError) as err:
        raise RecordError(f"malformed record body: {err}") from err
    return StoredMessage(seq, timestamp_ms, deadline_ms, bool(flags & FLAG_PERSISTENT),
                         exchange, routing_key, properties, bytes(body[end:]))


def decode_checked(record: bytes | memoryview, body_crc: int) -> StoredMessage:
    """Decode a whole record (head included) whose head was read with `read_head`."""
    body = record[HEAD_SIZE:]
    if zlib.crc32(body) != body_crc:
        raise RecordError("a record that fails its checksum")
    return decode_body(body)


@dataclass(slots=True)
class ScanResult:
    """What `scan_segment` found: the good records and where the readable data ends."""

    records: list[tuple[int, int, int, int]]  # (offset, seq, size on disk, deadline_ms)
    end: int  # offset after the last good record: where appends may continue
    lost: int  # records (or damaged regions) that could not be read


def scan_segment(data: bytes | memoryview) -> ScanResult:
    """Walk a segment file's bytes, verifying every checksum.

    A record with a good head and a bad body is skipped (its length is trusted). A damaged
    head is resynchronised by searching forward for the next record whose head and body both
    check out; if none is found, the readable data ends there (a torn tail).
    """
    if bytes(data[:HEADER_SIZE]) != SEGMENT_HEADER:
        raise RecordError("not a Leveret segment file, or an unknown format version")
    records: list[tuple[int, int, int, int]] = []
    lost = 0
    offset = end = HEADER_SIZE
    size = len(data)
    while offset < size:
        head = read_head(data, offset)
        if head is None:
            found = _resync(data, offset + 1)
            if found is None:
                if any(data[offset:size]):  # trailing zeroes are preallocation, not a loss
                    lost += 1
                break
            lost += 1
            offset = found
            continue
        length, body_crc = head
        start = offset + HEAD_SIZE
        body = data[start : start + length]
        if len(body) < length:
            lost += 1  # torn tail
            break
        if zlib.crc32(body) == body_crc:
            _, seq, _, deadline_ms = _FIXED.unpack_from(body, 0)
            records.append((offset, seq, HEAD_SIZE + length, deadline_ms))
        else:
            lost += 1
        offset = end = start + length
    return ScanResult(records, end, lost)


def _resync(data: bytes | memoryview, start: int) -> int | None:
    """The offset of the next record at or after ``start`` whose head and body check out."""
    size = len(data)
    for offset in range(start, size - HEAD_SIZE):
        head = read_head(data, offset)
        if head is None:
            continue
        length, body_crc = head
        body = data[offset + HEAD_SIZE : offset + HEAD_SIZE + length]
        if len(body) == length and zlib.crc32(body) == body_crc:
            return offset
    return None


def encode_ack(kind: int, value: int) -> bytes:
    payload = _U8.pack(kind) + _U32.pack(value)
    return _U32.pack(zlib.crc32(payload)) + payload


def scan_acks(data: bytes) -> tuple[set[int], int, int, int]:
    """Read an ack log: (acked offsets, delivered-up-to offset or -1, readable end, lost).

    Reading stops at the first record that fails its checksum: what follows it cannot be
    trusted to be aligned.
    """
    acked: set[int] = set()
    delivered = -1
    offset = 0
    while offset + ACK_SIZE <= len(data):
        crc, kind, value = ACK_RECORD.unpack_from(data, offset)
        if zlib.crc32(data[offset + 4 : offset + ACK_SIZE]) != crc or kind not in (ACK,
                                                                                    DELIVERED):
            return acked, delivered, offset, 1
        if kind == ACK:
            acked.add(value)
        else:
            delivered = max(delivered, value)
        offset += ACK_SIZE
    lost = 1 if offset < len(data) else 0
    return acked, delivered, offset, lost
