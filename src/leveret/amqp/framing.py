"""AMQP 0-9-1 frames and methods: bytes in, values out, and back. No I/O.

Two codecs live here:

* The hot path, written by hand with `struct`: Basic.Publish and Basic.Ack/Nack/Reject in,
  Basic.Deliver, Basic.GetOk, Basic.Return and confirms out. The content-header properties
  block is never decoded or re-encoded; it is copied through as the publisher sent it.
* Every other method, decoded and encoded generically from pamqp's machine-readable spec
  (`pamqp.commands`: each class lists its fields and their AMQP types). pamqp's own codec is
  not used on input: it is quadratic on large tables and trusts lengths (see `core.tables`);
  nor on output, because its name checks refuse names RabbitMQ accepts (non-ASCII, long).

Frame layout (spec 2.3.5): type (1), channel (2), payload size (4), payload, 0xCE.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands
from pamqp.base import Frame as Method

from leveret.core.tables import TableError, decode_table, encode_table

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8  # header (7) + end byte (1)
FRAME_MIN_SIZE = 4096
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

BASIC_CLASS = 60
PUBLISH = 0x003C0028
ACK = 0x003C0050
NACK = 0x003C0078
REJECT = 0x003C005A

FRAME_HEAD = struct.Struct(">BHI")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_METHOD_ID = struct.Struct(">I")
_CONTENT_HEAD = struct.Struct(">BHIHHQ")
_TAG_AND_FLAG = struct.Struct(">QB")
_ACK_FIELDS = struct.Struct(">QB")
_REJECT_FIELDS = struct.Struct(">QB")


class MethodSyntaxError(ValueError):
    """A method frame's payload does not decode as its method's fields."""


class UnknownMethod(ValueError):
    """The class and method ids name no AMQP 0-9-1 method."""


# -- generic method codec, driven by pamqp's spec tables ------------------------------------

_METHOD_CLASSES: dict[int, type[Method]] = dict(commands.INDEX_MAPPING)
_LAYOUTS: dict[int, tuple[type[Method], tuple[tuple[str, str], ...]]] = {
    index: (cls, tuple((attr, cls.amqp_type(attr)) for attr in cls.__slots__))
    for index, cls in _METHOD_CLASSES.items()
}


def decode_method(payload: bytes) -> Method:
    """Decode a method frame payload (class id, method id, fields) into a pamqp method object.

    The object is built without calling its __init__, which validates names as pamqp's encoder
    would; the broker validates names itself, with RabbitMQ's rules.
    """
    if len(payload) < 4:
        raise MethodSyntaxError("method frame shorter than its class and method ids")
    index = _METHOD_ID.unpack_from(payload)[0]
    layout = _LAYOUTS.get(index)
    if layout is None:
        raise UnknownMethod(f"unknown method {index >> 16}.{index & 0xFFFF}")
    cls, fields = layout
    method = cls.__new__(cls)
    try:
        _decode_fields(method, fields, payload)
    except (IndexError, struct.error, UnicodeDecodeError, TableError) as err:
        raise MethodSyntaxError(f"cannot decode {cls.name}: {err or type(err).__name__}") from err
    return method


def _decode_fields(method: Method, fields: tuple[tuple[str, str], ...], data: bytes) -> None:
    pos = 4
    bit = 8  # position in the current bit octet; 8 means "no octet open"
    octet = 0
    for attr, kind in fields:
        if kind == "bit":
            if bit == 8:
                octet, bit = data[pos], 0
                pos += 1
            value: Any = bool(octet & (1 << bit))
            bit += 1
        else:
            bit = 8
            if kind == "shortstr":
                end = pos + 1 + data[pos]
                if end > len(data):
                    raise IndexError("short string runs past the end of the frame")
                value, pos = data[pos + 1 : end].decode(), end
            elif kind == "longstr":
                end = pos + 4 + _U32.unpack_from(data, pos)[0]
                if end > len(data):
                    raise IndexError("long string runs past the end of the frame")
                value, pos = data[pos + 4 : end], end
            elif kind == "table":
                value, pos = decode_table(data, pos)
            elif kind == "octet":
                value, pos = data[pos], pos + 1
            elif kind == "short":
                value, pos = _U16.unpack_from(data, pos)[0], pos + 2
            elif kind == "long":
                value, pos = _U32.unpack_from(data, pos)[0], pos + 4
            else:  # longlong, timestamp
                value, pos = _U64.unpack_from(data, pos)[0], pos + 8
        setattr(method, attr, value)
    if pos != len(data):  # RabbitMQ's decoder must match the whole payload too
        raise IndexError(f"{len(data) - pos} bytes after the last field")


def encode_method(channel: int, method: Method) -> bytes:
    """Encode a method frame without pamqp's name checks (RabbitMQ allows any UTF-8 name)."""
    cls = type(method)
    parts = [_METHOD_ID.pack(cls.index)]
    bits: list[bool] = []
    for attr, kind in _LAYOUTS[cls.index][1]:
        value = getattr(method, attr, None)
        if kind == "bit":
            bits.append(bool(value))
            continue
        if bits:
            parts.append(_pack_bits(bits))
            bits = []
        parts.append(_encode_field(kind, value))
    if bits:
        parts.append(_pack_bits(bits))
    payload = b"".join(parts)
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray()
    for start in range(0, len(bits), 8):
        out.append(sum(1 << i for i, bit in enumerate(bits[start : start + 8]) if bit))
    return bytes(out)


def _encode_field(kind: str, value: Any) -> bytes:
    if kind == "shortstr":
        return shortstr(value or "")
    if kind == "longstr":
        raw = value.encode() if isinstance(value, str) else bytes(value or b"")
        return _U32.pack(len(raw)) + raw
    if kind == "table":
        return encode_table(value or {})
    if kind == "octet":
        return _U8.pack(value or 0)
    if kind == "short":
        return _U16.pack(value or 0)
    if kind == "long":
        return _U32.pack(value or 0)
    return _U64.pack(value or 0)  # longlong, timestamp


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
    return _U8.pack(len(raw)) + raw


# -- hot path: publish and acks in ---------------------------------------------------------


def parse_publish(payload: bytes) -> tuple[str, str, bool, bool]:
    """Basic.Publish fields: (exchange, routing_key, mandatory, immediate)."""
    try:
        pos = 6  # class, method, reserved ticket
        end = pos + 1 + payload[pos]
        exchange = payload[pos + 1 : end].decode()
        pos = end
        end = pos + 1 + payload[pos]
        routing_key = payload[pos + 1 : end].decode()
        flags = payload[end]
        if end + 1 != len(payload):
            raise IndexError(f"{len(payload) - end - 1} bytes after the last field")
    except (IndexError, UnicodeDecodeError) as err:
        raise MethodSyntaxError(f"cannot decode Basic.Publish: {err}") from err
    return exchange, routing_key, bool(flags & 1), bool(flags & 2)


def parse_ack(payload: bytes) -> tuple[int, bool, bool]:
    """Basic.Ack, Basic.Nack or Basic.Reject fields: (delivery_tag, multiple, requeue).

    Ack has no requeue flag (False); Reject has no multiple flag (False).
    """
    if len(payload) != 13:
        raise MethodSyntaxError(f"cannot decode Basic.Ack/Nack/Reject of {len(payload)} bytes")
    tag, flags = _ACK_FIELDS.unpack_from(payload, 4)
    index = _METHOD_ID.unpack_from(payload)[0]
    if index == REJECT:
        return tag, False, bool(flags & 1)
    return tag, bool(flags & 1), bool(flags & 2) if index == NACK else False


def parse_content_header(payload: bytes) -> tuple[int, int, bytes]:
    """A content header frame payload: (class_id, body_size, properties block)."""
    if len(payload) < 14:
        raise MethodSyntaxError("content header shorter than 14 bytes")
    class_id, _weight, body_size = struct.unpack_from(">HHQ", payload)
    return class_id, body_size, payload[12:]


# -- hot path: deliveries and confirms out -------------------------------------------------


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> list[bytes]:
    """The content header frame and as many body frames as the frame size needs."""
    parts = [_CONTENT_HEAD.pack(FRAME_HEADER, channel, 12 + len(properties), BASIC_CLASS, 0,
                                len(body)), properties, b"\xce"]
    size = len(body)
    if size == 0:
        return parts
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        parts += (FRAME_HEAD.pack(FRAME_BODY, channel, size), body, b"\xce")
        return parts
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        parts += (FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)), bytes(piece), b"\xce")
    return parts


def deliver_method(
    channel: int, consumer_tag: bytes, delivery_tag: int, redelivered: bool, exchange: str,
    routing_key: str,
) -> bytes:
    """Basic.Deliver; ``consumer_tag`` is already a short string (encoded once per consumer)."""
    names = _names.get((exchange, routing_key))
    if names is None:
        names = shortstr(exchange) + shortstr(routing_key)
        if len(_names) >= 4096:
            _names.clear()
        _names[exchange, routing_key] = names
    size = 13 + len(consumer_tag) + len(names)
    return b"".join((FRAME_HEAD.pack(FRAME_METHOD, channel, size), b"\x00\x3c\x00\x3c",
                     consumer_tag, _TAG_AND_FLAG.pack(delivery_tag, redelivered), names,
                     b"\xce"))


# (exchange, routing key) -> both as short strings, for deliveries: few pairs recur.
_names: dict[tuple[str, str], bytes] = {}


def get_ok_method(
    channel: int, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str,
    message_count: int,
) -> bytes:
    payload = b"".join((b"\x00\x3c\x00\x47", _TAG_AND_FLAG.pack(delivery_tag, redelivered),
                        shortstr(exchange), shortstr(routing_key), _U32.pack(message_count)))
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def return_method(
    channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str
) -> bytes:
    payload = b"".join((b"\x00\x3c\x00\x32", _U16.pack(reply_code), shortstr(reply_text),
                        shortstr(exchange), shortstr(routing_key)))
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


_CONFIRM = struct.Struct(">BHIIQBB")


def confirm_frame(channel: int, delivery_tag: int, multiple: bool, ack: bool = True) -> bytes:
    """Basic.Ack (or Basic.Nack, with requeue false) from the broker for publisher confirms."""
    method_id = 0x50 if ack else 0x78
    flags = 1 if multiple else 0
    return _CONFIRM.pack(FRAME_METHOD, channel, 13, (BASIC_CLASS << 16) | method_id,
                         delivery_tag, flags, FRAME_END)


def declare_ok(channel: int, queue_name: str, message_count: int, consumer_count: int) -> bytes:
    """Queue.DeclareOk, written here because pamqp's encoder refuses non-ASCII queue names."""
    payload = b"".join((b"\x00\x32\x00\x0b", shortstr(queue_name),
                        _U32.pack(message_count), _U32.pack(consumer_count)))
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"
