"""The fuzz tests' referee: a raw AMQP client, the verdict on each example, and the broker harness.

Every example opens a raw socket to a broker shared by its test module, sends hostile bytes and
then accepts exactly three outcomes: the server closed the socket; it closed the connection or
a channel with an AMQP reply code (541 INTERNAL_ERROR is a failure: it means an unhandled
exception in the broker); or the connection still answers Channel.Open on a fresh channel.
Everything the server writes must parse as AMQP frames, and its event loop must never stay busy
for a second. After every example a pika connection opened at the start must still declare,
publish and get, the broker thread must be alive, no connection may be left behind, and no
logger under ``leveret`` may report an internal error.

This module holds no tests and no fixtures (the ``harness`` fixture is in ``conftest.py``); the
bytes the tests send are built in ``frames``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
from hypothesis import HealthCheck, event, settings
from pamqp import commands, frame

from leveret import Broker
from tests.integration.fuzz.frames import (
    CHANNEL_MAX,
    FRAME_MAX,
    PROTOCOL_HEADER,
    method_frame,
    start_ok_frame,
)

PROBE_CHANNEL = CHANNEL_MAX  # the fresh channel the health probe opens
PROBE = method_frame(PROBE_CHANNEL, commands.Channel.Open())
HEALTHY = (PROBE_CHANNEL, commands.Channel.OpenOk)  # the answer that proves a connection healthy

INTERNAL_ERROR = 541
REPLY_CODES = frozenset({200, 311, 312, 313, 320, 402, 403, 404, 405, 406, 501, 502, 503, 504,
                         505, 506, 530, 540})

QUIET_S = 0.2  # no reply for this long: the server is waiting for the rest of a frame
CLOSE_WAIT_S = 5.0  # a server asked to close must have done so by then (its close-ok timer is 3 s)
VERDICT_LIMIT_S = 15.0
STALL_LIMIT_S = 1.0  # longest the broker may stay busy with one example's input
FRESH_CLIENT_EVERY = 25  # examples between two brand-new pika connections

FUZZ = settings(
    deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- reading what the server writes --------------------------------------------------------

class Closed(Exception):
    """The server closed (or reset) the socket."""


class Refused(Exception):
    """The server answered the handshake with Connection.Close."""


def check_reply_code(method: Any, context: str) -> None:
    """A Connection.Close or Channel.Close from the server must carry a known error code."""
    code, text = method.reply_code, method.reply_text
    if code == INTERNAL_ERROR:
        raise AssertionError(f"541 INTERNAL_ERROR (an unhandled exception in the broker) "
                             f"{context}: {text!r}")
    assert code in REPLY_CODES, f"unexpected reply code {code} {context}: {text!r}"


class FuzzClient:
    """A raw AMQP socket that checks every byte the server writes forms a valid frame."""

    def __init__(self, port: int, *, header_reply_allowed: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLOSE_WAIT_S)
        # Without it, TuneOk and Open written back to back wait 40 ms for a delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.header_reply_allowed = header_reply_allowed
        self.header_rejected = False

    def __enter__(self) -> FuzzClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send; a server that already closed is no error here (what it wrote is still read)."""
        self.sock.settimeout(CLOSE_WAIT_S)  # not what is left of the last read's timeout
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def send_method(self, channel: int, method: Any) -> None:
        self.send(frame.marshal(method, channel))

    def read_frame(self, timeout: float) -> tuple[int, int, bytes] | None:
        """The next frame as (type, channel, payload); None after ``timeout`` of silence."""
        deadline = time.monotonic() + timeout
        while True:
            cut = self._cut_frame()
            if cut is not None:
                return cut
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as err:  # a reset: what was in flight may be lost with it
                raise Closed(str(err)) from err
            if not chunk:
                assert not self.buffer, f"server closed mid-frame: {bytes(self.buffer[:80])!r}"
                raise Closed("end of stream")
            self.buffer += chunk

    def _cut_frame(self) -> tuple[int, int, bytes] | None:
        buf = self.buffer
        assert not (self.header_rejected and buf), f"bytes after the protocol header: {buf!r}"
        if self.header_reply_allowed and buf[:4] == b"AMQP"[: len(buf)] and buf:
            # The reply to a bad protocol header: ours, then the socket closes (spec 4.2.2).
            if len(buf) < 8:
                return None
            assert bytes(buf[:8]) == PROTOCOL_HEADER, f"bad protocol header {bytes(buf[:8])!r}"
            del buf[:8]
            self.header_rejected = True
            return None
        if len(buf) < 7:
            return None
        frame_type, channel, size = struct.unpack_from(">BHI", buf)
        assert frame_type in (1, 2, 3, 8), f"server sent garbage: {bytes(buf[:80])!r}"
        assert size <= FRAME_MAX - 8, f"server frame of {size} bytes exceeds frame_max"
        if len(buf) < size + 8:
            return None
        raw = bytes(buf[: size + 8])
        del buf[: size + 8]
        self.header_reply_allowed = False  # only legal before any frame
        assert raw[-1] == 0xCE, f"server frame without its end octet: {raw[:80]!r}"
        check_frame(frame_type, channel, raw)
        return frame_type, channel, raw[7:-1]

    def expect(self, kind: type, channel: int = 0) -> Any:
        """The next method frame, which must be ``kind`` (a Close raises Refused)."""
        got = self.read_frame(CLOSE_WAIT_S)
        assert got is not None, f"no {kind.__name__} within {CLOSE_WAIT_S} s"
        method = decode_method(*got)
        if isinstance(method, commands.Connection.Close):
            check_reply_code(method, "during the handshake")
            self.send_method(0, commands.Connection.CloseOk())
            raise Refused(method.reply_text)
        assert isinstance(method, kind) and got[1] == channel, f"expected {kind}, got {method}"
        return method

    def handshake(self, start_ok: bytes | None = None) -> None:
        """Connect as guest to '/' with frame_max 131072, channel_max 2047 and no heartbeat."""
        self.send(PROTOCOL_HEADER)
        self.expect(commands.Connection.Start)
        self.send(start_ok_frame() if start_ok is None else start_ok)
        self.expect(commands.Connection.Tune)
        self.send(frame.marshal(commands.Connection.TuneOk(
            channel_max=CHANNEL_MAX, frame_max=FRAME_MAX, heartbeat=0), 0)
            + frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
        self.expect(commands.Connection.OpenOk)

    def open_channel(self, channel: int) -> None:
        self.send_method(channel, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk, channel)


def check_frame(frame_type: int, channel: int, raw: bytes) -> None:
    """Content and heartbeat frames from the server must be well formed too."""
    payload = raw[7:-1]
    if frame_type == 2:  # properties are copied from the publisher: only the head is checked
        assert len(payload) >= 14, f"content header too short: {raw!r}"
        class_id, weight = struct.unpack_from(">HH", payload)
        assert (class_id, weight) == (60, 0), f"bad content header: {raw!r}"
    elif frame_type == 3:
        assert payload, "empty content body frame"
    elif frame_type == 8:
        assert channel == 0 and not payload, f"bad heartbeat frame: {raw!r}"


def decode_method(frame_type: int, channel: int, payload: bytes) -> Any:
    """A method frame decoded by pamqp, an independent codec; None for other frame types."""
    if frame_type != 1:
        return None
    raw = struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"
    try:
        return frame.unmarshal(raw)[2]
    except Exception as err:
        raise AssertionError(f"server method frame does not parse ({err}): {raw[:120]!r}") from err


def verdict(harness: Harness, client: FuzzClient, probe: bytes,
            answer: tuple[int, type] | None) -> str:
    """Send ``probe`` after the fuzz input and classify what the server does.

    ``answer`` is the (channel, method) that proves the connection healthy. If the server goes
    quiet, its event loop must still be free (a quiet broker is not a busy one); then it is
    waiting for the rest of a frame the input announced: zeros complete that frame without its
    end octet, which must make the server close the connection.
    """
    client.send(probe)
    flushed = False
    deadline = time.monotonic() + VERDICT_LIMIT_S
    while time.monotonic() < deadline:
        try:
            got = client.read_frame(CLOSE_WAIT_S if flushed else QUIET_S)
        except Closed:
            return "socket closed" if not client.header_rejected else "protocol header returned"
        if got is None:
            assert not flushed, f"server neither answered nor closed within {CLOSE_WAIT_S} s"
            harness.assert_responsive()
            client.send(bytes(FRAME_MAX + 8))
            flushed = True
            continue
        method = decode_method(*got)
        if isinstance(method, commands.Connection.Close):
            check_reply_code(method, "on Connection.Close")
            client.send_method(0, commands.Connection.CloseOk())
            return f"connection closed {method.reply_code}" + (" after zeros" if flushed else "")
        if isinstance(method, commands.Channel.Close):
            check_reply_code(method, f"on Channel.Close of channel {got[1]}")
            client.send_method(got[1], commands.Channel.CloseOk())
            event(f"channel closed {method.reply_code}")
        elif answer is not None and not flushed and (got[1], type(method)) == answer:
            return "healthy"
    raise AssertionError(f"server kept talking for {VERDICT_LIMIT_S} s without a verdict")


# -- the harness: one broker, a pika client that must keep working, the broker's logs ---------


class LogProblems(logging.Handler):
    """Collects what leveret (and asyncio, for callbacks that raise) log as errors."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().lower()
        if record.levelno >= logging.ERROR or record.exc_info or "internal error" in text:
            self.records.append(record)

    def report(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}\n{self.format(r) if r.exc_info else ''}"
                         for r in self.records)


@dataclass
class Harness:
    """The module's broker, and what must still hold after every example."""

    broker: Broker
    channel: Any  # pika BlockingChannel on the connection opened before any fuzzing
    problems: LogProblems
    baseline: int  # connections open when no fuzz client is
    health_queue: str = field(default_factory=lambda: f"leveret.fuzz.health.{uuid.uuid4().hex}")
    examples: int = 0

    @property
    def port(self) -> int:
        assert self.broker.port is not None
        return self.broker.port

    @contextlib.contextmanager
    def example(self) -> Iterator[None]:
        """Run one example, then check the broker survived it; failures carry its error log."""
        self.problems.records.clear()
        try:
            yield
        except AssertionError as err:
            if not self.problems.records:
                raise
            raise AssertionError(f"{err}\nThe broker logged:\n{self.problems.report()}") from err
        self.check()

    def check(self) -> None:
        """The broker survived: its thread, no leftover connections, other clients, its log."""
        self.examples += 1
        thread = self.broker._thread  # the thread `with Broker()` runs it on
        assert thread is not None and thread.is_alive(), "the broker thread died"
        self.wait_for_connections(self.baseline)
        round_trip(self.channel, self.health_queue)
        if self.examples % FRESH_CLIENT_EVERY == 0:
            with pika.BlockingConnection(pika.URLParameters(self.broker.url)) as conn:
                round_trip(conn.channel(), self.health_queue)
            self.wait_for_connections(self.baseline)
        assert not self.problems.records, f"the broker logged errors:\n{self.problems.report()}"

    def assert_responsive(self) -> None:
        """The broker's event loop runs a callback promptly: no input may keep it busy."""
        started = time.monotonic()
        self.broker.call(_connection_count(self.broker))
        blocked = time.monotonic() - started
        assert blocked < STALL_LIMIT_S, f"the broker's event loop was blocked for {blocked:.1f} s"

    def wait_for_connections(self, expected: int) -> None:
        deadline = time.monotonic() + CLOSE_WAIT_S
        while (count := self.broker.call(_connection_count(self.broker))) > expected:
            assert time.monotonic() < deadline, f"{count - expected} connections left behind"
            time.sleep(0.002)


async def _connection_count(broker: Broker) -> int:
    return len(broker.connections)


def round_trip(channel: Any, queue: str) -> None:
    body = uuid.uuid4().bytes
    channel.queue_declare(queue)
    channel.basic_publish("", queue, body)
    _, _, got = channel.basic_get(queue, auto_ack=True)
    assert got == body, "a healthy client lost its message"


@contextlib.contextmanager
def running_harness() -> Iterator[Harness]:
    """A broker on port 0, a pika connection to it and a watch on its logs, for one module."""
    problems = LogProblems()
    loggers = [logging.getLogger("leveret"), logging.getLogger("asyncio")]
    for logger in loggers:
        assert logger.isEnabledFor(logging.ERROR)
        logger.addHandler(problems)
    try:
        with Broker(port=0) as broker, pika.BlockingConnection(
            pika.URLParameters(broker.url)
        ) as conn:
            channel = conn.channel()
            baseline = broker.call(_connection_count(broker))
            yield Harness(broker, channel, problems, baseline)
            problems.records.clear()  # what examples logged was reported by each of them
    finally:
        for logger in loggers:
            logger.removeHandler(problems)
    assert not problems.records, f"the broker logged errors at shutdown:\n{problems.report()}"


def fuzz_after_handshake(harness: Harness, data: bytes, *, open_channel: bool = True) -> str:
    """Handshake, optionally open channel 1, send ``data``; return the verdict."""
    with harness.example(), FuzzClient(harness.port) as client:
        client.handshake()
        if open_channel:
            client.open_channel(1)
        client.send(data)
        outcome = verdict(harness, client, PROBE, HEALTHY)
    event(outcome)
    return outcome
