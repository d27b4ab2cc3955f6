"""Fuzzing the live broker with raw bytes: garbage after the handshake, frame headers that lie,
and garbage before (or instead of) the protocol header.

These inputs mostly stop at the frame reader. Each example must end in one of the outcomes
``harness`` accepts (socket closed, a known reply code, or a connection that still answers),
and the broker must survive it (see ``Harness.check``). Methods that decode are fuzzed in
``test_fuzz_methods``; content frames in ``test_fuzz_content``.
"""

from __future__ import annotations

import struct

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pamqp import commands, frame

from tests.integration.fuzz.frames import (
    CHANNEL_MAX,
    FRAME_MAX,
    FRAME_SIZES,
    HEARTBEAT,
    PROTOCOL_HEADER,
    channels,
    mutate,
    mutations,
    raw_frame,
    start_ok_frame,
)
from tests.integration.fuzz.harness import FUZZ, FuzzClient, Harness, fuzz_after_handshake, verdict

# -- (a) random bytes after the handshake ------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(open_channel=st.booleans(), data=st.binary(max_size=2048))
@example(open_channel=True, data=b"")
@example(open_channel=True, data=b"\xce" * 64)
@example(open_channel=False, data=bytes(8))
@example(open_channel=True, data=HEARTBEAT * 100)
def test_random_bytes_after_handshake(harness: Harness, open_channel: bool, data: bytes) -> None:
    fuzz_after_handshake(harness, data, open_channel=open_channel)


# -- (b) frame headers that are well formed but lie -------------------------------------------

method_ids = st.sampled_from(sorted(commands.INDEX_MAPPING)).map(lambda i: struct.pack(">I", i))


@st.composite
def lying_frames(draw: st.DrawFn) -> bytes:
    frame_type = draw(st.sampled_from([1, 2, 3, 8]) | st.integers(0, 255))
    payload = draw(st.one_of(st.binary(max_size=256),
                             st.tuples(method_ids, st.binary(max_size=64)).map(b"".join)))
    size = draw(st.one_of(st.just(len(payload)), st.integers(0, len(payload) + 16),
                          st.sampled_from(FRAME_SIZES), st.integers(0, 2**32 - 1)))
    end = draw(st.just(0xCE) | st.integers(0, 255))
    return raw_frame(frame_type, draw(channels), payload, size, end)


@settings(FUZZ, max_examples=150)
@given(open_channel=st.booleans(), frames=st.lists(lying_frames(), min_size=1, max_size=4))
@example(open_channel=True, frames=[raw_frame(1, 1, b"", size=2**32 - 1)])
@example(open_channel=True, frames=[raw_frame(1, 1, b"\x00\x14\x00\x28", size=FRAME_MAX)])
@example(open_channel=True, frames=[raw_frame(3, 1, bytes(FRAME_MAX))])
@example(open_channel=True, frames=[raw_frame(8, 0, b"x"), raw_frame(8, 5, b"")])
@example(open_channel=True, frames=[raw_frame(1, 1, b"\x00\x3c\x00\x28", end=0)])
def test_frames_with_lying_headers(harness: Harness, open_channel: bool,
                                   frames: list[bytes]) -> None:
    fuzz_after_handshake(harness, b"".join(frames), open_channel=open_channel)


# -- (c) garbage before, or instead of, the protocol header ----------------------------------

_HANDSHAKE_FRAMES = [start_ok_frame(), frame.marshal(commands.Connection.TuneOk(
    channel_max=CHANNEL_MAX, frame_max=FRAME_MAX), 0),
    frame.marshal(commands.Connection.Open(virtual_host="/"), 0)]
preambles = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.integers(0, 8), st.binary(max_size=32)).map(
        lambda t: PROTOCOL_HEADER[: t[0]] + t[1]),
    st.tuples(st.integers(0, 7), st.integers(1, 255)).map(
        lambda t: PROTOCOL_HEADER[: t[0]] + bytes([PROTOCOL_HEADER[t[0]] ^ t[1]])
        + PROTOCOL_HEADER[t[0] + 1:]),
    st.sampled_from([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"AMQP\x01\x01\x00\x09",
                     b"AMQP\x00\x00\x00\x00", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                     PROTOCOL_HEADER * 2, HEARTBEAT]),
    st.lists(st.tuples(st.sampled_from(_HANDSHAKE_FRAMES), st.lists(mutations, max_size=2)),
             max_size=3).map(lambda frames: PROTOCOL_HEADER + b"".join(
                 mutate(f, ops) for f, ops in frames)),
)


@settings(FUZZ, max_examples=100)
@given(data=preambles)
@example(data=b"")
@example(data=b"AMQP")
@example(data=b"AMQP\x00\x00\x09\x02")
@example(data=PROTOCOL_HEADER + bytes(7))
def test_garbage_instead_of_protocol_header(harness: Harness, data: bytes) -> None:
    with harness.example(), FuzzClient(harness.port, header_reply_allowed=True) as client:
        client.send(data)
        if len(data) < 8 and PROTOCOL_HEADER.startswith(data):
            # Still a prefix of the header: finishing it must get Connection.Start.
            outcome = verdict(harness, client, PROTOCOL_HEADER[len(data):],
                              (0, commands.Connection.Start))
        else:
            outcome = verdict(harness, client, b"", None)
    event(outcome)
