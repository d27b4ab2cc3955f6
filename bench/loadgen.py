"""A lean AMQP load generator: raw sockets, frames built once, so the client is rarely the
bottleneck. Every message carries its number (and, for latency runs, its send time); the
consumers check that each number arrives exactly once.

    publish(...)  pipelined publishes, optionally with publisher confirms (N in flight), at
                  full speed or at a steady rate
    consume(...)  a consumer with manual multiple-acks or auto-ack
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pamqp import commands, frame
from pamqp.header import ContentHeader

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_MAX = 131072
_HEAD = struct.Struct(">BHI")
_STAMP = struct.Struct(">Qd")  # message number, send time (time.time())
_DELIVER = b"\x00\x3c\x00\x3c"
_ACK = b"\x00\x3c\x00\x50"
_NACK = b"\x00\x3c\x00\x78"


class LoadError(Exception):
    """The broker closed the connection, or a message went missing or came twice."""


class Client:
    """One AMQP connection with one channel, spoken directly."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending: list[tuple[int, bytes]] = []  # frames read past an awaited reply
        self.sock.sendall(PROTOCOL_HEADER)
        self._expect(commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(response="\x00guest\x00guest"))
        self._expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(channel_max=10, frame_max=FRAME_MAX))
        self.send(0, commands.Connection.Open(virtual_host="/"))
        self._expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self._expect(commands.Channel.OpenOk)

    def close(self) -> None:
        """Close the AMQP way: by its Close-Ok the broker has handled every frame sent before.
        (Closing the socket at once resets the connection if a frame from the broker is still
        unread, and a reset makes the broker drop the publishes it had not read yet.)"""
        try:
            self.sock.settimeout(10)
            self.send(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0,
                                                       method_id=0))
            self._expect(commands.Connection.CloseOk)
        except (OSError, LoadError):
            pass  # the broker is gone or closed first: nothing more to wait for
        finally:
            self.sock.close()

    def send(self, channel: int, value: object) -> None:
        self.sock.sendall(frame.marshal(value, channel))  # type: ignore[arg-type]

    def call(self, value: object, reply: type) -> object:
        self.send(1, value)
        return self._expect(reply)

    def frames(self) -> list[tuple[int, bytes]]:
        """Read what is available (blocking for at least one frame): (type, payload) pairs."""
        out, self.pending = self.pending, []
        while not out:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise LoadError("the broker closed the connection")
            self.buf += chunk
            pos = 0
            while len(self.buf) - pos >= 8:
                kind, _, size = _HEAD.unpack_from(self.buf, pos)
                if len(self.buf) - pos < size + 8:
                    break
                out.append((kind, bytes(self.buf[pos + 7 : pos + 7 + size])))
                pos += size + 8
            del self.buf[:pos]
        return out

    def _expect(self, kind: type) -> object:
        while True:
            received = self.frames()
            for i, (frame_type, payload) in enumerate(received):
                if frame_type != 1:
                    continue
                _, _, value = frame.unmarshal(_HEAD.pack(1, 0, len(payload)) + payload + b"\xce")
                if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                    raise LoadError(f"closed by the broker: {value.reply_text}")
                if isinstance(value, kind):
                    self.pending = received[i + 1 :] + self.pending
                    return value


class Message:
    """The frames of one message, built once; `frames(number)` stamps a copy."""

    def __init__(self, queue: str, size: int, persistent: bool, exchange: str = "") -> None:
        size = max(size, _STAMP.size)
        props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
        self.prefix = (frame.marshal(commands.Basic.Publish(exchange=exchange,
                                                            routing_key=queue), 1)
                       + frame.marshal(ContentHeader(0, size, props), 1))
        chunk = FRAME_MAX - 8
        self.first = min(size, chunk)
        self.head = _HEAD.pack(3, 1, self.first)
        self.filler = bytes(self.first - _STAMP.size)
        rest = b"".join(_HEAD.pack(3, 1, len(part)) + part + b"\xce"
                        for part in (bytes(min(chunk, size - start))
                                     for start in range(chunk, size, chunk)))
        self.tail = b"\xce" + rest

    def frames(self, number: int, sent_at: float = 0.0) -> list[bytes]:
        return [self.prefix, self.head, _STAMP.pack(number, sent_at), self.filler, self.tail]


@dataclass
class Result:
    count: int
    seconds: float
    cpu_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def publish(host: str, port: int, queue: str, count: int, *, start: int = 0, size: int = 1024,
            persistent: bool = True, confirm_window: int = 0, batch: int = 100,
            rate: float = 0.0, exchange: str = "") -> Result:
    """Publish ``count`` messages numbered ``start``.. ; with confirms, keep at most
    ``confirm_window`` unconfirmed and wait for every confirm before returning; with a
    ``rate``, send at that many messages per second, stamped with their send time."""
    client = Client(host, port)
    if confirm_window:
        client.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
    message = Message(queue, size, persistent, exchange)
    confirmed = sent = 0
    cpu = time.process_time()
    started = time.perf_counter()
    if rate:
        batch = 1
    while sent < count:
        n = min(batch, count - sent)
        if confirm_window:
            n = min(n, confirm_window - (sent - confirmed))
            if n <= 0:
                confirmed = _read_confirms(client, confirmed)
                continue
        if rate:
            delay = started + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        parts: list[bytes] = []
        now = time.time()
        for number in range(start + sent, start + sent + n):
            parts += message.frames(number, now)
        client.sock.sendall(b"".join(parts))
        sent += n
    while confirm_window and confirmed < count:
        confirmed = _read_confirms(client, confirmed)
    elapsed = time.perf_counter() - started
    client.close()
    return Result(count, elapsed, time.process_time() - cpu)


def _read_confirms(client: Client, confirmed: int) -> int:
    for frame_type, payload in client.frames():
        if frame_type == 1 and payload[:4] == _NACK:
            raise LoadError("the broker nacked a publish")
        if frame_type == 1 and payload[:4] == _ACK:
            confirmed = max(confirmed, struct.unpack_from(">Q", payload, 4)[0])
    return confirmed


class Tally:
    """Exactly-once bookkeeping for one consumer, or several sharing a bytearray-like map."""

    def __init__(self, seen: bytearray | object, start: int, count: int) -> None:
        self.seen = seen
        self.start = start
        self.count = count
        self.received = 0

    def mark(self, number: int) -> None:
        index = number - self.start
        seen = self.seen
        if not 0 <= index < self.count or seen[index]:  # type: ignore[index]
            raise LoadError(f"message {number} unexpected or duplicated")
        seen[index] = 1  # type: ignore[index]
        self.received += 1


def consume(host: str, port: int, queue: str, count: int, *, start: int = 0,
            prefetch: int = 500, auto_ack: bool = False, ack_every: int = 50,
            tally: Tally | None = None, done: Callable[[], bool] | None = None,
            latency: bool = False) -> Result:
    """Consume until ``count`` messages arrived (or ``done()``), checking that each number
    arrives exactly once; with ``latency``, record each message's age on arrival."""
    tally = tally or Tally(bytearray(count), start, count)
    done = done or (lambda: tally.received >= count)
    client = Client(host, port)
    if not auto_ack:
        client.call(commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)
    client.call(commands.Basic.Consume(queue=queue, no_ack=auto_ack), commands.Basic.ConsumeOk)
    client.sock.settimeout(0.2)
    last_tag = acked_tag = 0
    first = False  # the next body frame starts a message
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    while not done():
        try:
            received = client.frames()
        except TimeoutError:
            continue
        for frame_type, payload in received:
            if frame_type == 1 and payload[:4] == _DELIVER:
                last_tag = struct.unpack_from(">Q", payload, 5 + payload[4])[0]
            elif frame_type == 2:
                first = True
            elif frame_type == 3 and first:
                number, sent_at = _STAMP.unpack_from(payload)
                tally.mark(number)
                if latency:
                    latencies.append((time.time() - sent_at) * 1000)
                first = False
        if not auto_ack and last_tag - acked_tag >= min(ack_every, prefetch // 2 or 1):
            client.send(1, commands.Basic.Ack(delivery_tag=last_tag, multiple=True))
            acked_tag = last_tag
    if not auto_ack and last_tag > acked_tag:
        client.send(1, commands.Basic.Ack(delivery_tag=last_tag, multiple=True))
    elapsed = time.perf_counter() - started
    client.sock.settimeout(None)
    client.call(commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)
    client.close()
    return Result(tally.received, elapsed, time.process_time() - cpu, latencies)


def declare(host: str, port: int, queue: str, *, durable: bool = True) -> None:
    client = Client(host, port)
    client.call(commands.Queue.Declare(queue=queue, durable=durable), commands.Queue.DeclareOk)
    client.close()


def delete(host: str, port: int, queue: str) -> None:
    client = Client(host, port)
    client.call(commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
    client.close()
