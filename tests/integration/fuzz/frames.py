"""What the fuzz tests send: raw AMQP frames built byte by byte, and the shared strategies.

Builders here write any bytes, valid or not (pamqp refuses to encode most of what the fuzz tests
need); the strategies draw mutated frames and hostile field tables. This module does no I/O and
knows nothing of the broker: sockets and verdicts live in ``harness``, and strategies used by a
single test live beside that test.
"""

from __future__ import annotations

import struct
import warnings
from typing import Any

from hypothesis import strategies as st
from pamqp import commands, encode, frame, header

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_MAX = 131072
CHANNEL_MAX = 2047
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
MAX_MESSAGE_SIZE = 128 * 1024 * 1024  # leveret's default max_message_size


# -- frames we build -------------------------------------------------------------------------


def raw_frame(frame_type: int, channel: int, payload: bytes, size: int | None = None,
              end: int = 0xCE) -> bytes:
    size = len(payload) if size is None else size
    return struct.pack(">BHI", frame_type, channel, size) + payload + bytes([end])


def shortstr(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def sized(body: bytes, lie: int = 0) -> bytes:
    """A 4-byte length prefix (off by ``lie``, clamped to 32 bits), then ``body``."""
    return struct.pack(">I", min(max(len(body) + lie, 0), 2**32 - 1)) + body


DEFAULT_CLIENT_PROPERTIES = encode.field_table({
    "product": "leveret fuzz",
    "capabilities": {"authentication_failure_close": True, "consumer_cancel_notify": True},
})


def start_ok_frame(client_properties: bytes = DEFAULT_CLIENT_PROPERTIES,
                   mechanism: bytes = b"PLAIN", response: bytes = b"\x00guest\x00guest") -> bytes:
    """Connection.Start-Ok, its fields given as raw bytes (the table with its length)."""
    payload = (b"\x00\x0a\x00\x0b" + client_properties + shortstr(mechanism) + sized(response)
               + shortstr(b"en_US"))
    return raw_frame(1, 0, payload)


def with_table(channel: int, method: Any, table: bytes) -> bytes:
    """``method`` (whose last field is an empty table) encoded with ``table`` in its place."""
    encoded = frame.marshal(method, channel)
    assert encoded[-5:-1] == b"\x00\x00\x00\x00", f"{method} does not end with its table"
    return raw_frame(1, channel, encoded[7:-5] + table)


def content_header(channel: int, body_size: int, properties: bytes = b"\x00\x00",
                   class_id: int = 60) -> bytes:
    return raw_frame(2, channel, struct.pack(">HHQ", class_id, 0, body_size) + properties)


def method_frame(channel: int, method: Any) -> bytes:
    return frame.marshal(method, channel)


def encode_fields(kind: type, values: dict[str, Any]) -> bytes:
    """A method payload from field values: an encoder of our own, for values pamqp refuses."""
    parts = [struct.pack(">I", kind.index)]
    bits: list[bool] = []
    for attr in kind.__slots__:
        amqp_type, value = kind.amqp_type(attr), values[attr]
        if amqp_type == "bit":
            bits.append(value)
            continue
        if bits:
            parts.append(bytes([sum(1 << i for i, bit in enumerate(bits) if bit)]))
            bits = []
        if amqp_type == "shortstr":
            parts.append(shortstr(value.encode()[:255]))
        elif amqp_type == "longstr":
            parts.append(sized(value))
        elif amqp_type == "table":
            parts.append(value)
        else:
            fmt = {"octet": ">B", "short": ">H", "long": ">I"}.get(amqp_type, ">Q")
            parts.append(struct.pack(fmt, value))
    if bits:
        parts.append(bytes([sum(1 << i for i, bit in enumerate(bits) if bit)]))
    return b"".join(parts)


PROPERTIES = commands.Basic.Properties(
    content_type="text/plain", content_encoding="utf-8", headers={"k": "v", "n": 1},
    delivery_mode=2, priority=5, correlation_id="c", reply_to="r", expiration="60000",
    message_id="m", timestamp=None, message_type="t", user_id="guest", app_id="a",
)
VALID_PROPERTIES = header.ContentHeader(0, 0, PROPERTIES).marshal()[12:]


# -- real methods, encoded by pamqp, then mutated ----------------------------------------------

channels = st.sampled_from([1, 1, 1, 0, 2]) | st.integers(0, 65535)
FRAME_SIZES = [0, 1, 7, 8, 4095, FRAME_MAX - 8, FRAME_MAX - 1, FRAME_MAX, FRAME_MAX + 1,
               2**31 - 1, 2**31, 2**32 - 1]


def _deprecated(kind: type, **fields: Any) -> Any:
    """A method pamqp warns about (deprecated in 0-9-1, still sent by old clients)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return kind(**fields)


METHODS: dict[str, Any] = {
    "Connection.Close": commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                                  method_id=0),
    "Connection.CloseOk": commands.Connection.CloseOk(),
    "Connection.Open": commands.Connection.Open(virtual_host="/"),
    "Connection.TuneOk": commands.Connection.TuneOk(channel_max=10, frame_max=4096),
    "Connection.UpdateSecret": commands.Connection.UpdateSecret(new_secret="s", reason="r"),
    "Connection.Blocked": commands.Connection.Blocked(reason="r"),
    "Channel.Open": commands.Channel.Open(),
    "Channel.Flow": commands.Channel.Flow(active=True),
    "Channel.Close": commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0,
                                            method_id=0),
    "Channel.CloseOk": commands.Channel.CloseOk(),
    "Exchange.Declare": commands.Exchange.Declare(
        exchange="fuzz.x", exchange_type="topic", arguments={"alternate-exchange": "fuzz.ae"}),
    "Exchange.Declare headers": commands.Exchange.Declare(
        exchange="fuzz.h", exchange_type="headers", auto_delete=True),
    "Exchange.Delete": commands.Exchange.Delete(exchange="fuzz.x", if_unused=True),
    "Exchange.Bind": commands.Exchange.Bind(destination="fuzz.x", source="amq.topic",
                                            routing_key="#"),
    "Exchange.Unbind": commands.Exchange.Unbind(destination="fuzz.x", source="amq.topic",
                                                routing_key="#"),
    "Queue.Declare": commands.Queue.Declare(
        queue="fuzz.q", arguments={"x-max-length": 10, "x-queue-type": "classic"}),
    "Queue.Declare exclusive": commands.Queue.Declare(queue="", exclusive=True),
    "Queue.Bind": commands.Queue.Bind(queue="fuzz.q", exchange="amq.topic",
                                      routing_key="a.*.#"),
    "Queue.Bind headers": commands.Queue.Bind(queue="", exchange="amq.headers",
                                              arguments={"x-match": "any", "k": "v"}),
    "Queue.Unbind": commands.Queue.Unbind(queue="fuzz.q", exchange="amq.topic",
                                          routing_key="a.*.#"),
    "Queue.Purge": commands.Queue.Purge(queue="fuzz.q"),
    "Queue.Delete": commands.Queue.Delete(queue="fuzz.q", if_empty=True),
    "Basic.Qos": commands.Basic.Qos(prefetch_count=2),
    "Basic.Qos global": commands.Basic.Qos(prefetch_count=1, global_=True),
    "Basic.Consume": commands.Basic.Consume(queue="fuzz.q", consumer_tag="ctag"),
    "Basic.Consume no-ack": commands.Basic.Consume(queue="", no_ack=True),
    "Basic.Cancel": commands.Basic.Cancel(consumer_tag="ctag"),
    "Basic.Publish": commands.Basic.Publish(exchange="", routing_key="fuzz.q", mandatory=True),
    "Basic.Publish topic": commands.Basic.Publish(exchange="amq.topic", routing_key="a.b.c"),
    "Basic.Get": commands.Basic.Get(queue="fuzz.q"),
    "Basic.Ack": commands.Basic.Ack(delivery_tag=1),
    "Basic.Ack multiple": commands.Basic.Ack(delivery_tag=0, multiple=True),
    "Basic.Reject": commands.Basic.Reject(delivery_tag=1, requeue=True),
    "Basic.Nack": commands.Basic.Nack(delivery_tag=1, multiple=True, requeue=False),
    "Basic.Recover": commands.Basic.Recover(requeue=True),
    "Basic.RecoverAsync": _deprecated(commands.Basic.RecoverAsync, requeue=True),
    "Confirm.Select": commands.Confirm.Select(),
    "Tx.Select": commands.Tx.Select(),
    "Tx.Commit": commands.Tx.Commit(),
    "Tx.Rollback": commands.Tx.Rollback(),
    "ContentHeader": header.ContentHeader(0, 5, PROPERTIES),
    "ContentHeader empty": header.ContentHeader(0, 0, commands.Basic.Properties()),
}
mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**16), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**16)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("size"), st.sampled_from(FRAME_SIZES) | st.integers(0, 2**32 - 1)),
    st.tuples(st.just("chop"), st.integers(1, 8)),
)


def mutate(encoded: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    """Apply ``ops`` to a frame: payload edits keep the size field true unless "size" lies."""
    frame_type, channel, _ = struct.unpack_from(">BHI", encoded)
    payload = bytearray(encoded[7:-1])
    size: int | None = None
    chop = 0
    for op in ops:
        if op[0] == "flip" and payload:
            payload[op[1] % len(payload)] ^= op[2]
        elif op[0] == "truncate":
            del payload[op[1] % (len(payload) + 1):]
        elif op[0] == "extend":
            payload += op[1]
        elif op[0] == "insert":
            at = op[1] % (len(payload) + 1)
            payload[at:at] = op[2]
        elif op[0] == "size":
            size = op[1]
        elif op[0] == "chop":
            chop = op[1]
    out = raw_frame(frame_type, channel, bytes(payload), size)
    return out[: len(out) - chop]


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from([*METHODS, "ContentBody"]))
    channel = draw(channels)
    if name == "ContentBody":
        encoded = raw_frame(3, channel, b"hello")
    else:
        encoded = frame.marshal(METHODS[name], channel)
    ops = draw(st.lists(mutations, max_size=3))
    return f"{name} on {channel} {ops}", mutate(encoded, ops)


# -- field tables: random, deeply nested, huge ---------------------------------------------

_FIXED_SIZES = {b"b": 1, b"B": 1, b"s": 2, b"u": 2, b"I": 4, b"i": 4, b"l": 8, b"L": 8, b"f": 4,
                b"d": 8, b"T": 8, b"D": 5, b"t": 1}
_TAGS = {*_FIXED_SIZES, b"S", b"x", b"V", b"F", b"A"}
_KNOWN_KEYS = [b"x-match", b"x-max-length", b"x-max-length-bytes", b"x-message-ttl",
               b"x-expires", b"x-max-priority", b"x-queue-type", b"x-overflow", b"x-queue-mode",
               b"x-dead-letter-exchange", b"x-dead-letter-routing-key", b"alternate-exchange",
               b"x-single-active-consumer", b"x-delivery-limit", b"k", b"", b"capabilities",
               b"product", b"authentication_failure_close", b"consumer_cancel_notify"]
_KNOWN_STRINGS = [b"all", b"any", b"all-with-x", b"any-with-x", b"drop-head", b"reject-publish",
                  b"classic", b"quorum", b"lazy", b"amq.direct", b"fuzz.ae", b"v", b""]
_EDGE_VALUES = [b"L" + b"\xff" * 8, b"L\x80" + bytes(7), b"l\x80" + bytes(7), b"l" + b"\xff" * 8,
                b"I\x80\x00\x00\x00", b"I\x00\x00\x00\x00", b"i\xff\xff\xff\xff", b"b\xff",
                b"u\xff\xff", b"D\xff\x7f\xff\xff\xff", b"D\xff\x80\x00\x00\x00",
                b"T" + b"\xff" * 8,
                b"d\x7f\xf8" + bytes(6), b"d\x7f\xf0" + bytes(6), b"f\x7f\xc0\x00\x00",
                b"t\x02", b"V"]
lies = st.sampled_from([0, 0, 0, 1, -1, 4, -4, 2**31]) | st.integers(-16, 16)

keys = st.tuples(st.sampled_from(_KNOWN_KEYS) | st.binary(max_size=16),
                 st.sampled_from([0, 0, 0, 1, -1, 255])).map(
    lambda kl: bytes([(len(kl[0]) + kl[1]) % 256]) + kl[0])
scalars = st.one_of(
    st.sampled_from(sorted(_FIXED_SIZES)).flatmap(
        lambda tag: st.binary(min_size=_FIXED_SIZES[tag], max_size=_FIXED_SIZES[tag]).map(
            lambda raw: tag + raw)),
    st.sampled_from(_EDGE_VALUES),
    st.tuples(st.sampled_from([b"S", b"x"]),
              st.sampled_from(_KNOWN_STRINGS) | st.binary(max_size=40), lies).map(
        lambda t: t[0] + sized(t[1], t[2])),
    st.tuples(st.sampled_from(sorted(_FIXED_SIZES)), st.binary(max_size=3)).map(b"".join),
    st.tuples(st.sampled_from(sorted({bytes([t]) for t in range(256)} - _TAGS)),
              st.binary(max_size=8)).map(b"".join),
)


def _containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    tables = st.tuples(st.lists(st.tuples(keys, children).map(b"".join), max_size=5), lies)
    arrays = st.tuples(st.lists(children, max_size=5), lies)
    return (tables.map(lambda t: b"F" + sized(b"".join(t[0]), t[1]))
            | arrays.map(lambda t: b"A" + sized(b"".join(t[0]), t[1])))


field_values = st.recursive(scalars, _containers, max_leaves=30)


def nested_tables(depth: int) -> bytes:
    """A table holding a table under the key '' ... ``depth`` levels deep, built in O(depth)."""
    parts = [struct.pack(">I", 6 * depth)]
    parts += [b"\x00F" + struct.pack(">I", 6 * level) for level in range(depth - 1, -1, -1)]
    return b"".join(parts)


def nested_arrays(depth: int) -> bytes:
    """A table whose one value is an array holding an array ... ``depth`` levels deep."""
    parts = [struct.pack(">I", 2 + 5 * depth), b"\x00"]
    parts += [b"A" + struct.pack(">I", 5 * level) for level in range(depth - 1, -1, -1)]
    return b"".join(parts)


def wide_table(entries: int) -> bytes:
    """``entries`` entries with the empty key and a void value: 2 bytes each."""
    return sized(b"\x00V" * entries)


field_tables = st.one_of(
    st.tuples(st.lists(st.tuples(keys, field_values).map(b"".join), max_size=8), lies).map(
        lambda t: sized(b"".join(t[0]), t[1])),
    st.integers(1, 200).map(nested_tables),
    st.integers(1, 200).map(nested_arrays),
    st.integers(1, (FRAME_MAX - 64) // 2).map(wide_table),
)
