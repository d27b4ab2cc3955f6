"""A lean AMQP load generator: raw sockets, frames built once, so the client is rarely the
bottleneck. Every message carries its number; the consumer checks each arrives exactly once.

    publish(...)  pipelined publishes, optionally with publisher confirms (N in flight)
    consume(...)  a consumer with manual multiple-acks, or auto-ack
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from pamqp import commands, frame
from pamqp.header import ContentHeader

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_HEAD = struct.Struct(">BHI")
_ID = struct.Struct(">Q")
_DELIVER = b"\x00\x3c\x00\x3c"
_ACK = b"\x00\x3c\x00\x50"
_NACK = b"\x00\x3c\x00\x78"


class LoadError(Exception):
    """The broker closed the connection or a message went missing."""


class Client:
    """One AMQP connection with one channel, spoken directly."""

    def __init__(self, host: str, port: int, frame_max: int = 131072) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending: list[tuple[int, bytes]] = []  # frames read past an awaited reply
        self.frame_max = frame_max
        self.sock.sendall(PROTOCOL_HEADER)
        self._expect(commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(response="\x00guest\x00guest"))
        self._expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(channel_max=10, frame_max=frame_max))
        self.send(0, commands.Connection.Open(virtual_host="/"))
        self._expect(commands.Connection.OpenOk)
        self.send(1, commands.Channel.Open())
        self._expect(commands.Channel.OpenOk)

    def close(self) -> None:
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


def message_frames(queue: str, size: int, persistent: bool) -> tuple[bytes, bytes]:
    """The publish and header frames of one message (shared by all), and a body template."""
    publish = frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1)
    header = frame.marshal(ContentHeader(0, size, props), 1)
    return publish + header, bytes(max(size, 8))


@dataclass
class PublishResult:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def publish(host: str, port: int, queue: str, count: int, *, start: int = 0, size: int = 1024,
            persistent: bool = True, confirm_window: int = 0, batch: int = 100) -> PublishResult:
    """Publish ``count`` messages numbered ``start``.. ; with confirms, keep at most
    ``confirm_window`` unconfirmed and wait for every confirm before returning."""
    client = Client(host, port)
    if confirm_window:
        client.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
    prefix, body = message_frames(queue, size, persistent)
    body_head = _HEAD.pack(3, 1, len(body))
    confirmed = 0
    started = time.perf_counter()
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        if confirm_window:
            n = min(n, confirm_window - (sent - confirmed))
            if n <= 0:
                confirmed = _read_confirms(client, confirmed)
                continue
        parts = []
        for number in range(start + sent, start + sent + n):
            parts += (prefix, body_head, _ID.pack(number), body[8:], b"\xce")
        client.sock.sendall(b"".join(parts))
        sent += n
    while confirm_window and confirmed < count:
        confirmed = _read_confirms(client, confirmed)
    elapsed = time.perf_counter() - started
    client.close()
    return PublishResult(count, elapsed)


def _read_confirms(client: Client, confirmed: int) -> int:
    for frame_type, payload in client.frames():
        if frame_type == 1 and payload[:4] == _NACK:
            raise LoadError("the broker nacked a publish")
        if frame_type == 1 and payload[:4] == _ACK:
            confirmed = max(confirmed, struct.unpack_from(">Q", payload, 4)[0])
    return confirmed


def consume(host: str, port: int, queue: str, count: int, *, start: int = 0,
            prefetch: int = 500, auto_ack: bool = False, ack_every: int = 50) -> PublishResult:
    """Consume ``count`` messages and check that numbers start..start+count-1 each arrived
    exactly once."""
    client = Client(host, port)
    if not auto_ack:
        client.call(commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)
    client.call(commands.Basic.Consume(queue=queue, no_ack=auto_ack), commands.Basic.ConsumeOk)
    seen = bytearray(count)
    received = 0
    last_tag = acked_tag = 0
    expect_body = False
    started = time.perf_counter()
    while received < count:
        for frame_type, payload in client.frames():
            if frame_type == 1 and payload[:4] == _DELIVER:
                tag_at = 5 + payload[4]
                last_tag = struct.unpack_from(">Q", payload, tag_at)[0]
                expect_body = True
            elif frame_type == 3 and expect_body:
                expect_body = False
                number = _ID.unpack_from(payload)[0] - start
                if not 0 <= number < count or seen[number]:
                    raise LoadError(f"message {number + start} unexpected or duplicated")
                seen[number] = 1
                received += 1
        if not auto_ack and last_tag - acked_tag >= min(ack_every, prefetch // 2 or 1):
            client.send(1, commands.Basic.Ack(delivery_tag=last_tag, multiple=True))
            acked_tag = last_tag
    if not auto_ack and last_tag > acked_tag:
        client.send(1, commands.Basic.Ack(delivery_tag=last_tag, multiple=True))
    elapsed = time.perf_counter() - started
    client.call(commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)
    client.close()
    return PublishResult(count, elapsed)


def declare(host: str, port: int, queue: str, *, durable: bool = True) -> None:
    client = Client(host, port)
    client.call(commands.Queue.Declare(queue=queue, durable=durable), commands.Queue.DeclareOk)
    client.close()


def delete(host: str, port: int, queue: str) -> None:
    client = Client(host, port)
    client.call(commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
    client.close()
