"""A minimal AMQP client over a raw socket, for tests that must send what real clients never do.

It speaks through pamqp (an independent codec), so it also checks that what Leveret writes is
valid AMQP to someone else's parser.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from pamqp import commands, frame, heartbeat
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class Closed(Exception):
    """The server closed the socket."""


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.start: commands.Connection.Start | None = None
        self.tune: commands.Connection.Tune | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ----------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, channel: int, value: Any) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def send_frame(self, frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> None:
        self.sock.sendall(struct.pack(">BHI", frame_type, channel, len(payload)) + payload
                          + bytes([end]))

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                properties: commands.Basic.Properties | None = None, mandatory: bool = False
                ) -> None:
        self.send(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                  mandatory=mandatory))
        self.send(channel, ContentHeader(0, len(body), properties or commands.Basic.Properties()))
        if body:
            self.send(channel, ContentBody(body))

    # -- receiving --------------------------------------------------------------------

    def recv(self, timeout: float = 5.0) -> tuple[int, Any]:
        """The next frame as (channel, frame object); heartbeats included."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 8:
                size = struct.unpack_from(">I", self.buffer, 3)[0]
                if len(self.buffer) >= size + 8:
                    used, channel, value = frame.unmarshal(self.buffer[: size + 8])
                    self.buffer = self.buffer[used:]
                    return channel, value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("server closed the connection")
            self.buffer += chunk

    def expect(self, kind: type[Frame], timeout: float = 5.0) -> Any:
        """The next non-heartbeat frame, which must be a ``kind``."""
        while True:
            _, value = self.recv(timeout)
            if isinstance(value, heartbeat.Heartbeat):
                continue
            if not isinstance(value, kind):
                raise AssertionError(f"expected {kind.__name__}, got {value!r} "
                                     f"{dict(value) if isinstance(value, Frame) else ''}")
            return value

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes the socket; return what it sent meanwhile."""
        self.sock.settimeout(timeout)
        received = self.buffer
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return received
            received += chunk

    # -- handshake --------------------------------------------------------------------

    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  heartbeat_interval: int = 0, frame_max: int = 131072,
                  channel_max: int = 2047, capabilities: dict[str, bool] | None = None) -> None:
        self.send_raw(PROTOCOL_HEADER)
        self.start = self.expect(commands.Connection.Start)
        self.send(0, commands.Connection.StartOk(
            client_properties={"product": "rawamqp",
                               "capabilities": capabilities or {"consumer_cancel_notify": True}},
            mechanism="PLAIN", response=f"\x00{user}\x00{password}",
        ))
        self.tune = self.expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(channel_max=channel_max, frame_max=frame_max,
                                                heartbeat=heartbeat_interval))
        self.send(0, commands.Connection.Open(virtual_host=vhost))
        self.expect(commands.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.send(channel, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)
