"""Unit tests for leveret.core.message: the content-header properties block and Message.

Property blocks are byte literals (flags word, then the present fields in spec order); the
parser is cross-checked against pika's own encoder. No I/O, no broker.
"""

from __future__ import annotations

from typing import Any

import pika
import pytest

from leveret.core import message as m
from leveret.core.message import Entry, Message, PropertiesError, parse_properties

HEADERS_A1 = b"\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"  # {"a": 1}
TIMESTAMP = b"\x00\x00\x00\x00\x65\x53\xf1\x00"  # 1700000000

# One block per property: (block, (delivery_mode, priority, expiration, user_id, headers_at)).
SINGLE_PROPERTIES = [
    pytest.param(b"\x80\x00\x0atext/plain", (0, 0, None, None, -1), id="content_type"),
    pytest.param(b"\x40\x00\x04gzip", (0, 0, None, None, -1), id="content_encoding"),
    pytest.param(b"\x20\x00" + HEADERS_A1, (0, 0, None, None, 2), id="headers"),
    pytest.param(b"\x10\x00\x02", (2, 0, None, None, -1), id="delivery_mode"),
    pytest.param(b"\x08\x00\x09", (0, 9, None, None, -1), id="priority"),
    pytest.param(b"\x04\x00\x02c1", (0, 0, None, None, -1), id="correlation_id"),
    pytest.param(b"\x02\x00\x02rq", (0, 0, None, None, -1), id="reply_to"),
    pytest.param(b"\x01\x00\x0560000", (0, 0, "60000", None, -1), id="expiration"),
    pytest.param(b"\x00\x80\x02m1", (0, 0, None, None, -1), id="message_id"),
    pytest.param(b"\x00\x40" + TIMESTAMP, (0, 0, None, None, -1), id="timestamp"),
    pytest.param(b"\x00\x20\x01t", (0, 0, None, None, -1), id="type"),
    pytest.param(b"\x00\x10\x05guest", (0, 0, None, "guest", -1), id="user_id"),
    pytest.param(b"\x00\x08\x03app", (0, 0, None, None, -1), id="app_id"),
    pytest.param(b"\x00\x04\x01c", (0, 0, None, None, -1), id="cluster_id"),
    pytest.param(b"\x00\x00", (0, 0, None, None, -1), id="none"),
]

ALL_PROPERTIES = (
    b"\xff\xfc"
    + b"\x10application/json"  # content_type
    + b"\x05utf-8"  # content_encoding
    + HEADERS_A1  # headers, at offset 2 + 17 + 6 = 25
    + b"\x02"  # delivery_mode
    + b"\x05"  # priority
    + b"\x04corr"  # correlation_id
    + b"\x05reply"  # reply_to
    + b"\x041500"  # expiration
    + b"\x05msg-1"  # message_id
    + TIMESTAMP  # timestamp
    + b"\x03evt"  # type
    + b"\x06us\xc3\xa9r1"  # user_id "usér1"
    + b"\x05tests"  # app_id
    + b"\x00"  # cluster_id
)


@pytest.mark.parametrize(("block", "expected"), SINGLE_PROPERTIES)
def test_each_property_flag_is_walked(block: bytes, expected: tuple[Any, ...]) -> None:
    assert parse_properties(block) == expected


def test_block_with_every_property() -> None:
    assert parse_properties(ALL_PROPERTIES) == (2, 5, "1500", "us\u00e9r1", 25)


def test_message_from_wire_exposes_the_fields_the_broker_reads() -> None:
    msg = Message.from_wire("ex", "rk", ALL_PROPERTIES, b"body")
    assert (msg.delivery_mode, msg.priority, msg.expiration, msg.user_id) == (
        2, 5, "1500", "us\u00e9r1",
    )
    assert msg.persistent
    assert msg.size == 4
    assert msg.headers == {"a": 1}
    assert msg.properties is ALL_PROPERTIES  # kept as sent, never re-encoded


def test_message_without_properties() -> None:
    msg = Message.from_wire("", "q", b"\x00\x00", b"")
    assert (msg.delivery_mode, msg.priority, msg.expiration, msg.user_id) == (0, 0, None, None)
    assert not msg.persistent
    assert msg.headers == {}
    assert msg.size == 0


def test_transient_delivery_mode_is_not_persistent() -> None:
    assert not Message.from_wire("", "q", b"\x10\x00\x01", b"").persistent


def test_headers_are_decoded_lazily() -> None:
    # The headers table is measured at publish (its length fits) but not decoded: a bad
    # entry inside it surfaces only when something asks for the headers.
    block = b"\x20\x00" + b"\x00\x00\x00\x03\x01kZ"
    msg = Message.from_wire("ex", "rk", block, b"")
    assert msg.headers_at == 2
    with pytest.raises(PropertiesError, match="invalid headers table: unknown field value"):
        _ = msg.headers


def test_headers_are_decoded_once() -> None:
    msg = Message.from_wire("ex", "rk", b"\x20\x00" + HEADERS_A1, b"")
    assert msg.headers is msg.headers


def test_continuation_flag_word_is_skipped() -> None:
    assert parse_properties(b"\x10\x01\x00\x00\x02") == (2, 0, None, None, -1)


MALFORMED = [
    pytest.param(b"", "run past the end of the frame", id="empty"),
    pytest.param(b"\x00", "run past the end of the frame", id="half-flags"),
    pytest.param(b"\x80\x00\x05ab", "short string runs past the end", id="shortstr-past-end"),
    pytest.param(b"\x00\x10\x09guest", "short string runs past the end",
                 id="user-id-past-end"),
    pytest.param(b"\x10\x00", "run past the end of the frame", id="missing-delivery-mode"),
    pytest.param(b"\x20\x00\x00\x00", "run past the end of the frame", id="truncated-headers"),
    pytest.param(b"\x20\x00\x00\x00\x00\x10", "properties are 6 bytes but the fields take 22",
                 id="headers-past-end"),
    pytest.param(b"\x00\x40\x00\x00", "properties are 4 bytes but the fields take 10",
                 id="truncated-timestamp"),
    pytest.param(b"\x00\x00\x00", "properties are 3 bytes but the fields take 2",
                 id="trailing-byte"),
    pytest.param(b"\x10\x00\x02\x00\x00", "properties are 5 bytes but the fields take 3",
                 id="trailing-bytes-after-field"),
    pytest.param(b"\x00\x02", "reserved property flag bit is set", id="reserved-bit"),
    pytest.param(b"\x01\x00\x02\xff\xfe", "short string is not valid UTF-8",
                 id="expiration-not-utf8"),
    pytest.param(b"\x00\x10\x02\xc3\x28", "short string is not valid UTF-8",
                 id="user-id-not-utf8"),
]


@pytest.mark.parametrize(("block", "message"), MALFORMED)
def test_malformed_block_raises_properties_error(block: bytes, message: str) -> None:
    with pytest.raises(PropertiesError, match=message):
        parse_properties(block)
    with pytest.raises(PropertiesError, match=message):
        Message.from_wire("ex", "rk", block, b"")


def test_properties_error_is_a_value_error() -> None:
    assert issubclass(PropertiesError, ValueError)


# -- cross-check against pika's encoder ----------------------------------------------------

PIKA_FLAGS = [
    ("content_type", "text/plain", m.CONTENT_TYPE),
    ("content_encoding", "gzip", m.CONTENT_ENCODING),
    ("headers", {"a": 1}, m.HEADERS),
    ("delivery_mode", 2, m.DELIVERY_MODE),
    ("priority", 3, m.PRIORITY),
    ("correlation_id", "c", m.CORRELATION_ID),
    ("reply_to", "r", m.REPLY_TO),
    ("expiration", "10", m.EXPIRATION),
    ("message_id", "id", m.MESSAGE_ID),
    ("timestamp", 1700000000, m.TIMESTAMP),
    ("type", "t", m.TYPE),
    ("user_id", "u", m.USER_ID),
    ("app_id", "a", m.APP_ID),
    ("cluster_id", "c", m.CLUSTER_ID),
]


def _pika_block(**fields: Any) -> bytes:
    # BasicProperties.encode() returns [flag words..., field pieces...]: exactly the block a
    # client puts after class id, weight and body size in the content header frame.
    return b"".join(pika.BasicProperties(**fields).encode())


@pytest.mark.parametrize(("name", "value", "flag"), PIKA_FLAGS, ids=[f[0] for f in PIKA_FLAGS])
def test_flag_constants_match_pika(name: str, value: Any, flag: int) -> None:
    block = _pika_block(**{name: value})
    assert int.from_bytes(block[:2], "big") == flag
    parse_properties(block)  # the single field is walked to the end exactly


def test_parser_reads_what_pika_encodes() -> None:
    headers = {
        "x-retry": 3,
        "trace": "abc",
        "big": 2**40,
        "flag": True,
        "nested": {"list": [1, "two", None], "raw": b"\x00\xff"},
    }
    block = _pika_block(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="amq.rabbitmq.reply-to",
        expiration="1500",
        message_id="msg-1",
        timestamp=1700000000,
        type="event",
        user_id="us\u00e9r",
        app_id="tests",
        cluster_id="c1",
    )
    delivery_mode, priority, expiration, user_id, headers_at = parse_properties(block)
    assert (delivery_mode, priority, expiration, user_id) == (2, 7, "1500", "us\u00e9r")
    assert headers_at == 2 + 1 + len("application/json") + 1 + len("utf-8")
    msg = Message.from_wire("ex", "rk", block, b"")
    assert msg.headers == headers


def test_empty_pika_properties_are_the_empty_block() -> None:
    assert _pika_block() == b"\x00\x00"
    assert parse_properties(_pika_block()) == (0, 0, None, None, -1)


def test_pika_block_with_trailing_garbage_is_refused() -> None:
    block = _pika_block(delivery_mode=2, user_id="guest") + b"\x00"
    with pytest.raises(PropertiesError, match="but the fields take"):
        parse_properties(block)


# -- entries ---------------------------------------------------------------------------------


def test_entry_points_at_a_shared_message() -> None:
    msg = Message("ex", "rk", b"\x00\x00", b"x")
    first, second = Entry(msg, 1), Entry(msg, 2, redelivered=True)
    assert first.message is second.message
    assert (first.seq, first.redelivered) == (1, False)
    assert (second.seq, second.redelivered) == (2, True)
    assert "seq=2, redelivered=True" in repr(second)


def test_continuation_bit_without_a_next_word_is_accepted() -> None:
    # RabbitMQ 3.10 passes such a block through unchanged (probed), so Leveret does too.
    assert parse_properties(b"\x00\x01") == (0, 0, None, None, -1)
