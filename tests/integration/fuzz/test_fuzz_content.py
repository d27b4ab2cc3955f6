"""Fuzzing the live broker with content frames out of order: publishes, content headers and
bodies on the wrong channels, with lying sizes and properties, interleaved with the methods that
meet a message in flight (get, consume, purge, tx, confirms, channel close) and heartbeats.

Each example must end in one of the outcomes ``harness`` accepts and leave the broker healthy
(see ``Harness.check``). Raw bytes are fuzzed in ``test_fuzz_bytes``, methods and field tables
in ``test_fuzz_methods``.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import commands

from tests.integration.fuzz.frames import (
    HEARTBEAT,
    MAX_MESSAGE_SIZE,
    VALID_PROPERTIES,
    content_header,
    method_frame,
    raw_frame,
)
from tests.integration.fuzz.harness import FUZZ, Harness, fuzz_after_handshake

_CONTENT_QUEUE = "fuzz.content"
_BODY_SIZES = [0, 1, 5, 64, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1, 2**63, 2**64 - 1]
_CONTENT_METHODS = [
    commands.Queue.Declare(queue=_CONTENT_QUEUE), commands.Queue.Purge(queue=_CONTENT_QUEUE),
    commands.Basic.Get(queue=_CONTENT_QUEUE, no_ack=True), commands.Basic.Get(queue=_CONTENT_QUEUE),
    commands.Basic.Consume(queue=_CONTENT_QUEUE, no_ack=True),
    commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0),
    commands.Channel.CloseOk(), commands.Tx.Select(), commands.Tx.Commit(),
    commands.Confirm.Select(), commands.Basic.Ack(delivery_tag=1),
]
content_channels = st.sampled_from([1, 1, 1, 1, 0, 2])
content_blocks = st.one_of(
    st.builds(lambda ch, ex, mandatory: (f"publish {ex!r} on {ch}", method_frame(
        ch, commands.Basic.Publish(exchange=ex, routing_key=_CONTENT_QUEUE, mandatory=mandatory))),
        content_channels, st.sampled_from(["", "amq.direct", "amq.headers", "fuzz.missing"]),
        st.booleans()),
    st.builds(lambda ch, size, props, class_id: (f"header {size} on {ch}", content_header(
        ch, size, props, class_id)),
        content_channels, st.sampled_from(_BODY_SIZES) | st.integers(0, 200),
        st.sampled_from([b"\x00\x00", VALID_PROPERTIES]) | st.binary(max_size=40),
        st.just(60) | st.integers(0, 65535)),
    st.builds(lambda ch, body: (f"body {len(body)} on {ch}", raw_frame(3, ch, body)),
              content_channels, st.binary(max_size=80)),
    st.builds(lambda ch, method: (f"{method.name} on {ch}", method_frame(ch, method)),
              content_channels, st.sampled_from(_CONTENT_METHODS)),
    st.just(("heartbeat", HEARTBEAT)),
)
_PUBLISH_CONTENT = ("publish", method_frame(1, commands.Basic.Publish(routing_key=_CONTENT_QUEUE)))


@settings(FUZZ, max_examples=150)
@given(open_channel=st.booleans(), blocks=st.lists(content_blocks, min_size=1, max_size=8))
@example(open_channel=True, blocks=[("header", content_header(1, 5))])
@example(open_channel=True, blocks=[("body", raw_frame(3, 1, b"hello"))])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("body", raw_frame(3, 1, b"hello"))])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("header", content_header(1, 2)),
                                    ("body", raw_frame(3, 1, b"hello"))])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("header", content_header(1, 2**64 - 1))])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("header", content_header(1, 5)),
                                    ("header", content_header(1, 5))])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("header", content_header(1, 5)),
                                    ("body", raw_frame(3, 1, b"")), _PUBLISH_CONTENT])
@example(open_channel=True, blocks=[_PUBLISH_CONTENT, ("header", content_header(1, 1, b"\x00"))])
def test_content_frames_out_of_order(harness: Harness, open_channel: bool,
                                     blocks: list[tuple[str, bytes]]) -> None:
    fuzz_after_handshake(harness, b"".join(raw for _, raw in blocks), open_channel=open_channel)
