"""Unit tests for leveret.amqp.framing: method frames, the publish/ack hot path, content frames.

Payloads are byte literals (class id, method id, then the fields); outgoing frames are
compared byte for byte with what pamqp marshals for the same method, and decoded back with
pamqp's unmarshal. No sockets.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pamqp import body as pamqp_body
from pamqp import commands, frame, header

from leveret.amqp import framing
from leveret.amqp.framing import MethodSyntaxError, UnknownMethod

QUEUE_DECLARE = (
    b"\x00\x32\x00\x0a" + b"\x00\x00" + b"\x05tasks" + b"\x0a"  # durable, auto_delete
    + b"\x00\x00\x00\x14\x0ex-max-priorityI\x00\x00\x00\x0a"
)
BASIC_CONSUME = (
    b"\x00\x3c\x00\x14" + b"\x00\x00" + b"\x05tasks" + b"\x07ctag-01" + b"\x06"  # no_ack, excl
    + b"\x00\x00\x00\x00"
)
EXCHANGE_BIND = (
    b"\x00\x28\x00\x1e" + b"\x00\x00" + b"\x04dest" + b"\x03src" + b"\x05a.b.#" + b"\x01"
    + b"\x00\x00\x00\x10\x07x-matchS\x00\x00\x00\x03any"
)
EXCHANGE_DECLARE = (
    b"\x00\x28\x00\x0a" + b"\x00\x00" + b"\x04logs" + b"\x05topic" + b"\x1a"  # durable,
    + b"\x00\x00\x00\x00"  # internal, nowait
)
START_OK = (
    b"\x00\x0a\x00\x0b" + b"\x00\x00\x00\x11\x07productS\x00\x00\x00\x04pika" + b"\x05PLAIN"
    + b"\x00\x00\x00\x0c\x00guest\x00guest" + b"\x05en_US"
)
BASIC_QOS = b"\x00\x3c\x00\x0a" + b"\x00\x00\x00\x00" + b"\x00\x0a" + b"\x01"


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Split concatenated frames into (type, channel, payload), checking every frame end."""
    out = []
    while data:
        kind, channel, size = struct.unpack_from(">BHI", data)
        assert data[7 + size] == 0xCE
        out.append((kind, channel, data[7 : 7 + size]))
        data = data[8 + size :]
    return out


@contextmanager
def _deprecated_commands_allowed() -> Iterator[None]:
    # pamqp warns whenever it builds Basic.RecoverAsync (deprecated in 0-9-1); a broker must
    # still decode and encode it, so that one warning is expected here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This command is deprecated", DeprecationWarning)
        yield


def _new(cls: type) -> Any:
    with _deprecated_commands_allowed():
        return cls()


def _payload(method_frame: bytes) -> bytes:
    [(kind, _, payload)] = _frames(method_frame)
    assert kind == framing.FRAME_METHOD
    return payload


# -- decode_method ---------------------------------------------------------------------------

DECODED = [
    pytest.param(QUEUE_DECLARE, commands.Queue.Declare, {
        "ticket": 0, "queue": "tasks", "passive": False, "durable": True, "exclusive": False,
        "auto_delete": True, "nowait": False, "arguments": {"x-max-priority": 10},
    }, id="Queue.Declare"),
    pytest.param(BASIC_CONSUME, commands.Basic.Consume, {
        "ticket": 0, "queue": "tasks", "consumer_tag": "ctag-01", "no_local": False,
        "no_ack": True, "exclusive": True, "nowait": False, "arguments": {},
    }, id="Basic.Consume"),
    pytest.param(EXCHANGE_BIND, commands.Exchange.Bind, {
        "ticket": 0, "destination": "dest", "source": "src", "routing_key": "a.b.#",
        "nowait": True, "arguments": {"x-match": "any"},
    }, id="Exchange.Bind"),
    pytest.param(EXCHANGE_DECLARE, commands.Exchange.Declare, {
        "ticket": 0, "exchange": "logs", "exchange_type": "topic", "passive": False,
        "durable": True, "auto_delete": False, "internal": True, "nowait": True,
        "arguments": {},
    }, id="Exchange.Declare"),
    pytest.param(START_OK, commands.Connection.StartOk, {
        "client_properties": {"product": "pika"}, "mechanism": "PLAIN",
        "response": b"\x00guest\x00guest", "locale": "en_US",
    }, id="Connection.StartOk"),
    pytest.param(BASIC_QOS, commands.Basic.Qos, {
        "prefetch_size": 0, "prefetch_count": 10, "global_": True,
    }, id="Basic.Qos"),
    pytest.param(b"\x00\x32\x00\x28\x00\x00\x01q\x05", commands.Queue.Delete, {
        "ticket": 0, "queue": "q", "if_unused": True, "if_empty": False, "nowait": True,
    }, id="Queue.Delete"),
    pytest.param(b"\x00\x5a\x00\x0a", commands.Tx.Select, {}, id="Tx.Select"),
]


@pytest.mark.parametrize(("payload", "cls", "fields"), DECODED)
def test_decode_method(payload: bytes, cls: type, fields: dict[str, Any]) -> None:
    method = framing.decode_method(payload)
    assert type(method) is cls
    assert dict(method) == fields


MALFORMED = [
    pytest.param(b"\x00\x3c", MethodSyntaxError, "shorter than its class and method ids",
                 id="no-ids"),
    pytest.param(b"\x00\x3c\x00\x63", UnknownMethod, "unknown method 60.99", id="unknown"),
    pytest.param(b"\x00\x63\x00\x0a", UnknownMethod, "unknown method 99.10",
                 id="unknown-class"),
    pytest.param(b"\x00\x32\x00\x0a\x00\x00\x09abc", MethodSyntaxError,
                 "cannot decode Queue.Declare: short string runs past the end", id="shortstr"),
    pytest.param(b"\x00\x32\x00\x0a\x00\x00\x01q", MethodSyntaxError,
                 "cannot decode Queue.Declare", id="missing-bits"),
    pytest.param(b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x00\x00\x00\x00\x00",
                 MethodSyntaxError, "cannot decode Queue.Declare: 'utf-8' codec can't decode",
                 id="name-not-utf8"),
    pytest.param(b"\x00\x32\x00\x0a\x00\x00\x01q\x00\x00\x00\x00\x03\x01kZ", MethodSyntaxError,
                 "cannot decode Queue.Declare: unknown field value type 'Z'", id="bad-table"),
    pytest.param(b"\x00\x32\x00\x0a\x00\x00\x01q\x00\x00\x00\x00\x09", MethodSyntaxError,
                 "cannot decode Queue.Declare: field table length runs past",
                 id="table-past-end"),
    pytest.param(b"\x00\x0a\x00\x0b\x00\x00\x00\x00\x05PLAIN\x00\x00\x00\x10ab",
                 MethodSyntaxError, "cannot decode Connection.StartOk: long string runs past",
                 id="longstr-past-end"),
    pytest.param(b"\x00\x3c\x00\x0a\x00\x00", MethodSyntaxError, "cannot decode Basic.Qos",
                 id="truncated-long"),
    pytest.param(b"\x00\x3c\x00\x50\x00\x00\x00\x00", MethodSyntaxError, "cannot decode Basic.Ack",
                 id="truncated-longlong"),
]


@pytest.mark.parametrize(("payload", "error", "message"), MALFORMED)
def test_decode_malformed_method(payload: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        framing.decode_method(payload)


def test_decode_refuses_bytes_after_the_last_field() -> None:
    # RabbitMQ's generated decoder matches the whole payload; extra bytes are a frame error.
    with pytest.raises(MethodSyntaxError, match=r"cannot decode Basic\.Qos"):
        framing.decode_method(BASIC_QOS + b"\x00")


# -- encode_method ---------------------------------------------------------------------------

ALL_METHODS = [pytest.param(cls, id=cls.name) for cls in commands.INDEX_MAPPING.values()]


def _normal(kind: str, value: Any) -> Any:
    """What a field of ``kind`` holding ``value`` decodes to after encoding."""
    if kind == "bit":
        return bool(value)
    if kind == "shortstr":
        return value or ""
    if kind == "longstr":
        return value.encode() if isinstance(value, str) else bytes(value or b"")
    if kind == "table":
        return value or {}
    return value or 0


def _expected(method: Any) -> dict[str, Any]:
    return {attr: _normal(type(method).amqp_type(attr), value) for attr, value in method}


def _filled(cls: type) -> Any:
    """An instance with a distinct non-default value in every field (bits alternate)."""
    method = _new(cls)
    for i, attr in enumerate(cls.__slots__):
        values = {"bit": i % 2 == 0, "table": {"k": i}, "shortstr": f"s{i}",
                  "longstr": f"long-{i}", "octet": 7 + i, "short": 300 + i,
                  "long": 70000 + i, "longlong": 2**40 + i}
        setattr(method, attr, values[cls.amqp_type(attr)])
    return method


@pytest.mark.parametrize("cls", ALL_METHODS)
def test_encode_then_decode_default_method(cls: type) -> None:
    method = _new(cls)
    data = framing.encode_method(5, method)
    kind, channel, size = struct.unpack_from(">BHI", data)
    assert (kind, channel, size, data[-1]) == (framing.FRAME_METHOD, 5, len(data) - 8, 0xCE)
    decoded = framing.decode_method(data[7:-1])
    assert type(decoded) is cls
    assert dict(decoded) == _expected(method)


@pytest.mark.parametrize("cls", ALL_METHODS)
def test_encode_then_decode_filled_method_with_ours_and_pamqp(cls: type) -> None:
    method = _filled(cls)
    data = framing.encode_method(1, method)
    assert dict(framing.decode_method(_payload(data))) == _expected(method)
    with _deprecated_commands_allowed():
        consumed, channel, theirs = frame.unmarshal(data)
    assert (consumed, channel, type(theirs)) == (len(data), 1, cls)
    assert {a: _normal(cls.amqp_type(a), v) for a, v in theirs} == _expected(method)


MARSHALLABLE = [
    pytest.param(cls, id=cls.name) for cls in commands.INDEX_MAPPING.values()
    if all(value is not None for _, value in _new(cls))
]


@pytest.mark.parametrize("cls", MARSHALLABLE)
def test_encode_matches_pamqp_marshal_for_defaults(cls: type) -> None:
    assert framing.encode_method(2, _new(cls)) == frame.marshal(_new(cls), 2)


def test_encode_accepts_names_pamqp_refuses() -> None:
    declare = commands.Queue.Declare()
    declare.queue = name = "fila-\u00e9\u00e8-\u65e5\u672c"
    with pytest.raises(ValueError, match="Invalid value for queue"):
        frame.marshal(declare, 1)
    assert framing.decode_method(_payload(framing.encode_method(1, declare))).queue == name
    exchange = commands.Exchange.Declare()
    exchange.exchange = "x" * 200
    with pytest.raises(ValueError, match="exchange"):
        frame.marshal(exchange, 1)
    decoded = framing.decode_method(_payload(framing.encode_method(1, exchange)))
    assert decoded.exchange == "x" * 200


def test_encode_refuses_short_strings_over_255_bytes() -> None:
    declare = commands.Queue.Declare()
    declare.queue = "\u00e9" * 128  # 256 bytes of UTF-8
    with pytest.raises(ValueError, match="short string longer than 255 bytes"):
        framing.encode_method(1, declare)


# -- hot path in: publish, acks, content header ----------------------------------------------


def test_parse_publish_literals_and_pamqp() -> None:
    payload = b"\x00\x3c\x00\x28\x00\x00\x09amq.topic\x05a.b.c\x03"
    assert framing.parse_publish(payload) == ("amq.topic", "a.b.c", True, True)
    payload = b"\x00\x3c\x00\x28\x00\x00\x00\x06cl\xc3\xa9-1\x02"
    assert framing.parse_publish(payload) == ("", "cl\u00e9-1", False, True)
    publish = commands.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)
    assert framing.parse_publish(frame.marshal(publish, 1)[7:-1]) == ("ex", "rk", True, False)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x3c\x00\x28\x00\x00\x02ex\x02rk", id="missing-flags"),
        pytest.param(b"\x00\x3c\x00\x28\x00\x00\x20ab", id="exchange-past-end"),
        pytest.param(b"\x00\x3c\x00\x28\x00\x00\x00\x02\xff\xfe\x00", id="key-not-utf8"),
        pytest.param(b"\x00\x3c\x00\x28", id="no-fields"),
    ],
)
def test_parse_publish_malformed(payload: bytes) -> None:
    with pytest.raises(MethodSyntaxError, match=r"cannot decode Basic.Publish"):
        framing.parse_publish(payload)


TAG_42 = b"\x00\x00\x00\x00\x00\x00\x00\x2a"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"\x00\x3c\x00\x50" + TAG_42 + b"\x01", (42, True, False), id="ack-multi"),
        pytest.param(b"\x00\x3c\x00\x50" + TAG_42 + b"\x02", (42, False, False), id="ack"),
        pytest.param(b"\x00\x3c\x00\x78" + TAG_42 + b"\x03", (42, True, True), id="nack-both"),
        pytest.param(b"\x00\x3c\x00\x78" + TAG_42 + b"\x02", (42, False, True), id="nack-req"),
        pytest.param(b"\x00\x3c\x00\x5a" + TAG_42 + b"\x01", (42, False, True), id="reject-req"),
        pytest.param(b"\x00\x3c\x00\x5a" + TAG_42 + b"\x00", (42, False, False), id="reject"),
    ],
)
def test_parse_ack(payload: bytes, expected: tuple[int, bool, bool]) -> None:
    assert framing.parse_ack(payload) == expected


def test_parse_ack_reads_what_pamqp_marshals_and_refuses_truncation() -> None:
    nack = commands.Basic.Nack(2**40, multiple=True, requeue=False)
    assert framing.parse_ack(frame.marshal(nack, 1)[7:-1]) == (2**40, True, False)
    reject = commands.Basic.Reject(9, requeue=True)
    assert framing.parse_ack(frame.marshal(reject, 1)[7:-1]) == (9, False, True)
    with pytest.raises(MethodSyntaxError, match=r"cannot decode Basic.Ack/Nack/Reject"):
        framing.parse_ack(b"\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x2a")


def test_parse_content_header() -> None:
    props = b"\x90\x00\x0atext/plain\x02"
    payload = b"\x00\x3c\x00\x00" + b"\x00\x00\x01\x00\x00\x00\x00\x05" + props
    assert framing.parse_content_header(payload) == (60, 2**40 + 5, props)
    with pytest.raises(MethodSyntaxError, match="content header shorter than 14 bytes"):
        framing.parse_content_header(payload[:13])


def test_parse_content_header_reads_what_pamqp_marshals() -> None:
    properties = commands.Basic.Properties(content_type="text/plain", delivery_mode=2)
    data = frame.marshal(header.ContentHeader(0, 5, properties), 1)
    class_id, body_size, block = framing.parse_content_header(data[7:-1])
    assert (class_id, body_size) == (60, 5)
    assert block == b"\x90\x00\x0atext/plain\x02"


# -- hot path out: deliver, get-ok, return, confirms -----------------------------------------


def test_deliver_method_matches_pamqp() -> None:
    ours = framing.deliver_method(1, framing.shortstr("ctag-1"), 7, True, "amq.direct", "a.b")
    deliver = commands.Basic.Deliver("ctag-1", 7, True, "amq.direct", "a.b")
    assert ours == frame.marshal(deliver, 1)
    assert dict(frame.unmarshal(ours)[2]) == dict(deliver)


def test_deliver_method_is_the_same_when_its_names_come_from_the_cache() -> None:
    for tag, exchange, key in [(1, "ex", "a"), (2, "ex", "a"), (3, "ex", "b"), (4, "", "a"),
                               (5, "ex", "a")]:
        deliver = commands.Basic.Deliver("c", tag, False, exchange, key)
        assert framing.deliver_method(2, framing.shortstr("c"), tag, False, exchange,
                                      key) == frame.marshal(deliver, 2)


def test_deliver_method_with_non_ascii_names_decodes() -> None:
    data = framing.deliver_method(3, framing.shortstr("t"), 1, False, "\u00e9x", "cl\u00e9")
    assert dict(framing.decode_method(_payload(data))) == {
        "consumer_tag": "t", "delivery_tag": 1, "redelivered": False, "exchange": "\u00e9x",
        "routing_key": "cl\u00e9",
    }


def test_get_ok_method_matches_pamqp() -> None:
    ours = framing.get_ok_method(2, 9, False, "ex", "rk", 3)
    assert ours == frame.marshal(commands.Basic.GetOk(9, False, "ex", "rk", 3), 2)
    ours = framing.get_ok_method(2, 2**63 - 1, True, "", "q", 0)
    assert ours == frame.marshal(commands.Basic.GetOk(2**63 - 1, True, "", "q", 0), 2)


def test_return_method_matches_pamqp() -> None:
    ours = framing.return_method(1, 312, "NO_ROUTE", "ex", "rk")
    assert ours == frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "ex", "rk"), 1)


@pytest.mark.parametrize(
    ("args", "method"),
    [
        pytest.param((1, 5, True), commands.Basic.Ack(5, True), id="ack-multiple"),
        pytest.param((1, 5, False), commands.Basic.Ack(5, False), id="ack"),
        pytest.param((2, 2**40, False, False), commands.Basic.Nack(2**40, False, False),
                     id="nack"),
        pytest.param((2, 3, True, False), commands.Basic.Nack(3, True, False),
                     id="nack-multiple"),
    ],
)
def test_confirm_frame_matches_pamqp(args: tuple[Any, ...], method: Any) -> None:
    assert framing.confirm_frame(*args) == frame.marshal(method, args[0])


# -- content frames --------------------------------------------------------------------------

PROPS = b"\x90\x00\x0atext/plain\x02"


def test_content_frames_split_the_body_by_frame_max() -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes
    data = b"".join(framing.content_frames(4, PROPS, body, 4096))
    frames = _frames(data)
    assert [(kind, channel) for kind, channel, _ in frames] == [(2, 4), (3, 4), (3, 4), (3, 4)]
    assert [len(payload) for _, _, payload in frames[1:]] == [4088, 4088, 2064]
    assert b"".join(payload for _, _, payload in frames[1:]) == body
    assert frames[0][2] == b"\x00\x3c\x00\x00" + struct.pack(">Q", len(body)) + PROPS
    assert all(8 + len(payload) <= 4096 for _, _, payload in frames)


def test_content_frames_decode_with_pamqp() -> None:
    body = b"x" * 5000
    data = b"".join(framing.content_frames(1, PROPS, body, 4096))
    consumed, _, content_header = frame.unmarshal(data)
    assert isinstance(content_header, header.ContentHeader)
    assert content_header.body_size == 5000
    assert content_header.properties.content_type == "text/plain"
    assert content_header.properties.delivery_mode == 2
    received = b""
    data = data[consumed:]
    while data:
        consumed, _, piece = frame.unmarshal(data)
        assert isinstance(piece, pamqp_body.ContentBody)
        received += piece.value
        data = data[consumed:]
    assert received == body


@pytest.mark.parametrize(
    ("size", "pieces"),
    [(0, []), (1, [1]), (4088, [4088]), (4089, [4088, 1]), (8176, [4088, 4088])],
)
def test_content_frames_edges(size: int, pieces: list[int]) -> None:
    frames = _frames(b"".join(framing.content_frames(1, b"\x00\x00", b"z" * size, 4096)))
    assert frames[0] == (2, 1, b"\x00\x3c\x00\x00" + struct.pack(">Q", size) + b"\x00\x00")
    assert [len(payload) for _, _, payload in frames[1:]] == pieces
