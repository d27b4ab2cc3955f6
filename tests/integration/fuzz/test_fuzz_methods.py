"""Fuzzing the live broker with AMQP methods: real methods mutated byte by byte, well-encoded
methods in any order with colliding names and tags, hostile field tables wherever the protocol
carries one, and hostile Connection.Start-Ok fields (client properties, SASL mechanism and
response).

Mutated frames mostly stop at the method decoder; the well-encoded sequences and the tables reach
the handlers. Each example must end in one of the outcomes ``harness`` accepts and leave the
broker healthy (see ``Harness.check``). Raw bytes are fuzzed in ``test_fuzz_bytes``, content
frames in ``test_fuzz_content``.

Regression examples for two broker bugs this fuzzing found, both since fixed, stay pinned with
``@example`` beside the tests that found them:

1. A binding argument of type 'L' (uint64) >= 2**63, at any depth, on Queue.Bind, Queue.Unbind,
   Exchange.Bind or Exchange.Unbind gave 541 INTERNAL_ERROR: building the binding's identity
   re-encoded the arguments, and the table encoder refused the integer.
2. Topic routing blocked the event loop: with sixteen bindings of 127-word patterns mostly of '#'
   on amq.topic, one publish with a 128-word routing key kept the loop busy for seconds (every
   connection waited), because matching revisited every remaining word position for each '#'.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pamqp import commands, encode, frame, header

from tests.integration.fuzz.frames import (
    DEFAULT_CLIENT_PROPERTIES,
    FRAME_MAX,
    METHODS,
    VALID_PROPERTIES,
    content_header,
    encode_fields,
    field_tables,
    method_frame,
    mutate,
    mutated_frames,
    nested_arrays,
    nested_tables,
    raw_frame,
    sized,
    start_ok_frame,
    wide_table,
    with_table,
)
from tests.integration.fuzz.harness import (
    FUZZ,
    HEALTHY,
    PROBE,
    Closed,
    FuzzClient,
    Harness,
    Refused,
    fuzz_after_handshake,
    verdict,
)

# -- real methods, encoded by pamqp, then mutated ----------------------------------------------


@settings(FUZZ, max_examples=200)
@given(open_channel=st.booleans(), frames=st.lists(mutated_frames(), min_size=1, max_size=5))
@example(open_channel=True, frames=[
    ("Basic.Publish", method_frame(1, METHODS["Basic.Publish"])),
    ("ContentHeader truncated", mutate(frame.marshal(METHODS["ContentHeader"], 1),
                                       [("truncate", 20)])),
])
def test_mutated_method_frames(harness: Harness, open_channel: bool,
                               frames: list[tuple[str, bytes]]) -> None:
    fuzz_after_handshake(harness, b"".join(raw for _, raw in frames), open_channel=open_channel)


# -- every method, well encoded, with field values chosen to collide -----------------------
#
# Mutated bytes mostly stop at the decoder. These sequences decode, so they reach the handlers:
# declares, binds, consumers, acks, tx and confirms on names and tags that meet each other.

# Topic patterns and a key at the 255-byte limit: '#' costs a walk over every remaining word.
_STALL_PATTERNS = [".".join("*" if word == n else "#" for word in range(127)) for n in range(16)]
_STALL_KEY = ".".join(["a"] * 128)
_NAMES = ["", "fuzz.m1", "fuzz.m2", "fuzz.content", "amq.gen-x", "amq.direct", "amq.fanout",
          "amq.topic", "amq.headers", "amq.match", "amq.rabbitmq.trace", "fuzz.mx", "fuzz.my"]
_ARGUMENTS = [{}, {"x-match": "any", "k": "v"}, {"x-match": "all-with-x", "x-k": 1},
              {"alternate-exchange": "fuzz.my"}, {"x-max-length": 1}, {"x-overflow": "drop-head"},
              {"x-dead-letter-exchange": "amq.fanout"}, {"x-expires": 1000},
              {"x-max-priority": 10}, {"x-single-active-consumer": True},
              {"x-queue-type": "quorum"}, {"x-message-ttl": -1}, {"k": [1, {"n": None}]}]
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "queue": st.sampled_from(_NAMES) | st.text(max_size=8),
    "exchange": st.sampled_from(_NAMES) | st.text(max_size=8),
    "destination": st.sampled_from(_NAMES),
    "source": st.sampled_from(_NAMES),
    "exchange_type": st.sampled_from(["direct", "fanout", "topic", "headers", "x-custom", ""]),
    "routing_key": st.sampled_from(["", "a", "a.b", "#", "*.b", "a.#.#", "#.#", "fuzz.m1",
                                    "fuzz.content", *_STALL_PATTERNS[:3], _STALL_KEY])
                   | st.text(max_size=8),
    "consumer_tag": st.sampled_from(["", "c1", "c2"]),
    "delivery_tag": st.integers(0, 4) | st.integers(0, 2**64 - 1),
    "prefetch_count": st.integers(0, 3),
    "prefetch_size": st.sampled_from([0] * 9 + [1]),
    "arguments": st.sampled_from(_ARGUMENTS).map(encode.field_table) | field_tables,
    "client_properties": st.just(DEFAULT_CLIENT_PROPERTIES),
    "virtual_host": st.sampled_from(["/", "nope", ""]),
    # Fields whose rarer value closes the connection (540): keep them rare.
    "immediate": st.sampled_from([False] * 9 + [True]),
    "active": st.sampled_from([True] * 9 + [False]),
    "requeue": st.sampled_from([True] * 4 + [False]),
}
_BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 3) | st.integers(0, 65535),
    "long": st.integers(0, 3) | st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 3) | st.integers(0, 2**64 - 1),
    "timestamp": st.integers(0, 2**64 - 1),
    "shortstr": st.text(max_size=12),
    "longstr": st.binary(max_size=12),
    "table": st.just(encode.field_table({})),
}
_CLIENT_METHODS = [
    commands.Channel.Flow, commands.Channel.Close, commands.Exchange.Declare,
    commands.Exchange.Delete, commands.Exchange.Bind, commands.Exchange.Unbind,
    commands.Queue.Declare, commands.Queue.Bind, commands.Queue.Purge, commands.Queue.Delete,
    commands.Queue.Unbind, commands.Basic.Qos, commands.Basic.Consume, commands.Basic.Cancel,
    commands.Basic.Publish, commands.Basic.Publish, commands.Basic.Get, commands.Basic.Ack,
    commands.Basic.Reject, commands.Basic.Recover, commands.Basic.Nack, commands.Confirm.Select,
    commands.Tx.Select, commands.Tx.Commit, commands.Tx.Rollback,
]
_PROPERTY_BLOCKS = [b"\x00\x00", VALID_PROPERTIES] + [
    header.ContentHeader(0, 0, commands.Basic.Properties(**fields)).marshal()[12:]
    for fields in ({"headers": {"k": "v"}}, {"headers": {"x-k": 1}}, {"user_id": "other"},
                   {"delivery_mode": 2, "priority": 9}, {"expiration": "0"},
                   {"headers": {"k": [1, 2], "n": {"m": None}}})
]


@st.composite
def valid_methods(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(_CLIENT_METHODS * 5 + list(commands.INDEX_MAPPING.values())))
    channel = draw(st.sampled_from([1] * 8 + [2, 0]))
    values = {attr: draw(_FIELDS.get(attr, _BY_TYPE[kind.amqp_type(attr)]))
              for attr in kind.__slots__}
    data = raw_frame(1, channel, encode_fields(kind, values))
    if kind is commands.Basic.Publish:
        body = draw(st.binary(max_size=40))
        data += content_header(channel, len(body), draw(st.sampled_from(_PROPERTY_BLOCKS)))
        cut = draw(st.integers(0, len(body)))
        data += b"".join(raw_frame(3, channel, part) for part in (body[:cut], body[cut:]) if part)
    shown = {k: v for k, v in values.items() if k != "ticket"}
    return f"{kind.name} on {channel} {shown}", data


def _step(label: str, kind: type, **fields: Any) -> tuple[str, bytes]:
    """One well-encoded method on channel 1; fields not given are zero, empty or false."""
    defaults = {"bit": False, "shortstr": "", "longstr": b"", "table": encode.field_table({})}
    values = {attr: fields.get(attr, defaults.get(kind.amqp_type(attr), 0))
              for attr in kind.__slots__}
    return label, raw_frame(1, 1, encode_fields(kind, values))


_STALL_STEPS = [  # fixed bug 2: sixteen bindings and one publish blocked the loop for seconds
    _step("Queue.Declare exclusive", commands.Queue.Declare, exclusive=True),
    *(_step(f"Queue.Bind amq.topic '#.#...' with '*' as word {n}", commands.Queue.Bind,
            exchange="amq.topic", routing_key=pattern)
      for n, pattern in enumerate(_STALL_PATTERNS)),
    _step("Basic.Publish amq.topic 'a.a...' (128 words)", commands.Basic.Publish,
          exchange="amq.topic", routing_key=_STALL_KEY),
    ("header and body", content_header(1, 1) + raw_frame(3, 1, b"x")),
]


@settings(FUZZ, max_examples=200)
@given(steps=st.lists(valid_methods(), min_size=1, max_size=20))
# Regression example for fixed bug 2 (see the module docstring): the topic routing stall.
@example(steps=_STALL_STEPS)
def test_well_encoded_methods_in_any_order(harness: Harness,
                                           steps: list[tuple[str, bytes]]) -> None:
    data = method_frame(2, commands.Channel.Open()) + b"".join(raw for _, raw in steps)
    fuzz_after_handshake(harness, data)


# -- field tables wherever the protocol carries one (tables drawn by frames.field_tables) -

_EXCLUSIVE = method_frame(1, commands.Queue.Declare(queue="", exclusive=True))
_HEADERS_X = method_frame(1, commands.Exchange.Declare(exchange="fuzz.tables.x",
                                                       exchange_type="headers"))
_BIND_HEADERS = method_frame(1, commands.Queue.Bind(queue="", exchange="amq.headers",
                                                    arguments={"x-match": "any", "k": "v"}))
_PUBLISH_HEADERS = method_frame(1, commands.Basic.Publish(exchange="amq.headers"))
_HEADERS_MESSAGE = (_PUBLISH_HEADERS + frame.marshal(header.ContentHeader(
    0, 2, commands.Basic.Properties(headers={"k": "v", "x-n": 1})), 1) + raw_frame(3, 1, b"hi"))

TABLE_TARGETS: dict[str, tuple[bytes, Any, bytes]] = {
    # name: (frames before, method whose last field becomes the table, frames after)
    "Queue.Declare": (b"", commands.Queue.Declare(queue="fuzz.tables"), b""),
    "Queue.Declare exclusive": (b"", commands.Queue.Declare(queue="", exclusive=True), b""),
    "Exchange.Declare": (b"", commands.Exchange.Declare(exchange="fuzz.tables.y",
                                                        exchange_type="topic"), b""),
    "Queue.Bind headers": (_EXCLUSIVE, commands.Queue.Bind(queue="", exchange="amq.headers"),
                           _HEADERS_MESSAGE),
    "Queue.Bind topic": (_EXCLUSIVE, commands.Queue.Bind(queue="", exchange="amq.topic",
                                                         routing_key="#"), b""),
    "Queue.Unbind": (_EXCLUSIVE + _BIND_HEADERS,
                     commands.Queue.Unbind(queue="", exchange="amq.headers"), b""),
    "Exchange.Bind": (_HEADERS_X, commands.Exchange.Bind(destination="fuzz.tables.x",
                                                         source="amq.headers"), _HEADERS_MESSAGE),
    "Basic.Consume": (_EXCLUSIVE, commands.Basic.Consume(queue=""), b""),
}
HEADERS_TARGET = "message headers"


def table_input(target: str, table: bytes) -> bytes:
    """The frames that carry ``table`` to ``target`` on channel 1."""
    if target == HEADERS_TARGET:  # a message's headers property, routed by a headers exchange
        return (_EXCLUSIVE + _BIND_HEADERS + _PUBLISH_HEADERS
                + content_header(1, 2, b"\x20\x00" + table) + raw_frame(3, 1, b"hi"))
    before, method, after = TABLE_TARGETS[target]
    return before + with_table(1, method, table) + after


@settings(FUZZ, max_examples=150)
@given(target=st.sampled_from([*TABLE_TARGETS, HEADERS_TARGET]), table=field_tables)
# Regression example for fixed bug 1 (see the module docstring): a uint64 argument >= 2**63.
@example(target="Queue.Bind topic", table=sized(b"\x01aL" + b"\xff" * 8))
@example(target="Queue.Declare", table=nested_tables(10_000))
@example(target="Queue.Bind headers", table=nested_arrays(10_000))
@example(target=HEADERS_TARGET, table=nested_tables(10_000))
@example(target="Queue.Declare", table=wide_table(100_000))  # larger than frame_max
@example(target="Basic.Consume", table=wide_table((FRAME_MAX - 64) // 2))
@example(target=HEADERS_TARGET, table=wide_table((FRAME_MAX - 64) // 2))
@example(target="Queue.Declare", table=sized(b"\x0bx-max-length" + b"L" + b"\xff" * 8))
@example(target="Queue.Declare", table=sized(b"", 2**31))
def test_hostile_field_tables(harness: Harness, target: str, table: bytes) -> None:
    fuzz_after_handshake(harness, table_input(target, table))


# -- Connection.Start-Ok: client properties, SASL mechanism and response -------------------

_AMQPLAIN_GUEST = encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]
_PLAIN_GUEST = b"\x00guest\x00guest"
credentials = st.one_of(
    st.just((b"PLAIN", _PLAIN_GUEST)),
    st.just((b"AMQPLAIN", _AMQPLAIN_GUEST)),
    st.tuples(
        st.sampled_from([b"PLAIN", b"AMQPLAIN", b"", b"EXTERNAL", b"plain"]) | st.binary(
            max_size=12),
        st.one_of(
            st.sampled_from([b"guest\x00guest", b"\x00guest\x00guest\x00", b"\x00\xff\x00guest",
                             b""]),
            st.binary(max_size=40),
            field_tables.map(lambda table: table[4:]),  # AMQPLAIN: a table without its length
        )),
)


@settings(FUZZ, max_examples=80)
@given(table=st.booleans().flatmap(  # half the time the usual table, to reach SASL checks
    lambda usual: st.just(DEFAULT_CLIENT_PROPERTIES) if usual else field_tables),
    sasl=credentials)
@example(table=nested_tables(10_000), sasl=(b"PLAIN", _PLAIN_GUEST))
@example(table=sized(b"\x0ccapabilitiesS\x00\x00\x00\x01x"), sasl=(b"PLAIN", _PLAIN_GUEST))
@example(table=DEFAULT_CLIENT_PROPERTIES, sasl=(b"AMQPLAIN", nested_tables(10_000)[4:]))
def test_hostile_start_ok(harness: Harness, table: bytes, sasl: tuple[bytes, bytes]) -> None:
    with harness.example(), FuzzClient(harness.port) as client:
        try:
            client.handshake(start_ok_frame(table, *sasl))
        except (Closed, Refused):
            outcome = "refused"
        else:
            outcome = verdict(harness, client, PROBE, HEALTHY)
    event(outcome)
