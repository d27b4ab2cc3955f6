"""One client connection: the asyncio protocol, the handshake, heartbeats and the channel table.

Bytes arrive in `data_received`, are cut into frames, and each frame goes to the connection
(channel 0) or to its channel. Errors are translated here, in one place: a channel error closes
that channel with Channel.Close, a connection error closes the connection with
Connection.Close, and in both cases the peer's close-ok is awaited while further frames for
the closed scope are discarded, as the spec asks.

Outgoing frames are collected and written once per event-loop iteration (`_flush`), so a burst
of deliveries and confirms costs one system call.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import platform
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import commands
from pamqp.base import Frame as Method

from leveret import __version__
from leveret.amqp import framing
from leveret.amqp.auth import MECHANISMS, User, UserDirectory
from leveret.amqp.channel import Channel
from leveret.config import Settings
from leveret.core.vhost import VHost
from leveret.errors import (
    AMQPError,
    ChannelStateError,
    CommandInvalid,
    ConnectionForced,
    FrameError,
    InternalError,
    LoginRefused,
    NotAllowed,
    UnexpectedFrame,
)
from leveret.store.base import MessageStore

log = logging.getLogger(__name__)

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}
CLOSE_OK_TIMEOUT = 3.0
# Delivery bytes one connection gathers before it writes them out; consumers wait past it.
OUTPUT_LIMIT = 1 << 20


_PUBLISH = framing.PUBLISH.to_bytes(4, "big")
_RUNNING_METHODS = (commands.Connection.Close, commands.Connection.CloseOk,
                    commands.Connection.UpdateSecret)


class State(enum.Enum):
    AWAIT_HEADER = "awaiting protocol header"
    AWAIT_START_OK = "awaiting connection.start-ok"
    AWAIT_TUNE_OK = "awaiting connection.tune-ok"
    AWAIT_OPEN = "awaiting connection.open"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_EXPECTED: dict[State, type[Method]] = {
    State.AWAIT_START_OK: commands.Connection.StartOk,
    State.AWAIT_TUNE_OK: commands.Connection.TuneOk,
    State.AWAIT_OPEN: commands.Connection.Open,
}


@dataclass(slots=True)
class ServerContext:
    """What every connection shares: settings, vhosts, users and the set of live connections."""

    settings: Settings
    vhosts: Mapping[str, VHost]
    users: UserDirectory
    connections: set[Connection]
    alarm: str | None = None  # the active resource alarms, when any


class Connection(asyncio.Protocol):
    """The server side of one AMQP 0-9-1 connection."""

    def __init__(self, server: ServerContext) -> None:
        self.server = server
        self.settings = server.settings
        self.loop = asyncio.get_running_loop()
        self.state = State.AWAIT_HEADER
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.from_loopback = False
        self.user: User | None = None
        self.vhost: VHost | None = None
        self.client_properties: dict[str, Any] = {}
        self.channels: dict[int, Channel] = {}
        self.channel_max = self.settings.channel_max
        self.frame_max = self.settings.frame_max
        self.heartbeat = 0
        self.writable = True  # deliveries may be sent (see send_parts)
        self._transport_paused = False
        self._out_bytes = 0  # delivery bytes waiting in _out for the next flush
        self._buffer = bytearray()
        self._discard_input = False
        self.publish_blocked = False
        self._told_blocked = False
        self._reading_paused = False
        self._method_index = 0  # class and method of the frame being handled, for Close
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._confirming: set[Channel] = set()
        self._holds = 0
        self._heard = True
        self._sent = False
        self._missed = 0
        self._timers: list[asyncio.TimerHandle] = []
        self.closed = self.loop.create_future()

    def __repr__(self) -> str:
        return f"<Connection {self.peer} {self.state.value}>"

    @property
    def name(self) -> str:
        user = self.user.name if self.user else "-"
        return f"{self.peer} ({user})"

    # -- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # a stream transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
            self.from_loopback = _is_loopback(peer[0])
        self.server.connections.add(self)
        self._timers.append(
            self.loop.call_later(self.settings.handshake_timeout, self._handshake_timeout)
        )
        log.debug("accepting AMQP connection from %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.vhost is not None
        self.state = State.CLOSED
        for timer in self._timers:
            timer.cancel()
        for channel in list(self.channels.values()):
            channel.release()
        self.channels.clear()
        if self.vhost is not None:
            self.vhost.owner_closed(self)
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if was_open:
            log.info("closed AMQP connection %s%s", self.name, f": {exc}" if exc else "")

    def pause_writing(self) -> None:
        self._transport_paused = True
        self.writable = False

    def resume_writing(self) -> None:
        self._transport_paused = False
        if self._out_bytes <= OUTPUT_LIMIT:
            self._writable_again()

    def _writable_again(self) -> None:
        """Deliveries may flow again: let every queue this connection consumes from dispatch."""
        self.writable = True
        for queue in {c.queue for ch in self.channels.values() for c in ch.consumers.values()}:
            queue.dispatch()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if self._discard_input:
            return
        self._buffer += data
        self._process()

    def _process(self) -> None:
        """Handle every complete frame in the buffer (until reading is paused)."""
        buf = self._buffer
        if self.state is State.AWAIT_HEADER and not self._on_protocol_header():
            return
        pos = 0
        head = framing.FRAME_HEAD.unpack_from
        channels = self.channels
        frame_max = self.frame_max
        body_frame, method_frame, header_frame = (
            framing.FRAME_BODY, framing.FRAME_METHOD, framing.FRAME_HEADER)
        closed = State.CLOSED
        try:
            while self.state is not closed:
                size = len(buf)
                if size - pos < framing.FRAME_OVERHEAD:
                    break
                frame_type, channel, length = head(buf, pos)
                # RabbitMQ lets a payload reach frame_max (not frame_max - 8); so do we.
                if length > frame_max:
                    self._lose_framing(FrameError(
                        f"type {frame_type}, all octets = <<>>: {{frame_too_large,{length},"
                        f"{frame_max - framing.FRAME_OVERHEAD}}}"
                    ))
                    return
                end = pos + 7 + length
                if end >= size:
                    break
                if buf[end] != 0xCE:  # framing.FRAME_END
                    self._lose_framing(FrameError(
                        f"type {frame_type}, frame on channel {channel} of {length} bytes: "
                        f"{{invalid_frame_end_marker,{buf[end]}}}"
                    ))
                    return
                if self.publish_blocked and frame_type == method_frame and \
                        buf[pos + 7 : pos + 11] == _PUBLISH:
                    self._pause_reading()  # the publish waits in the buffer for the alarm
                    break
                payload = bytes(buf[pos + 7 : end])
                pos = end + 1
                target = channels.get(channel) if self.state is State.OPEN else None
                if target is None or target.closing:
                    self._method_index = 0
                    self._on_frame(frame_type, channel, payload)
                elif frame_type == body_frame:  # the hot path, most frames first
                    target.handle_body(payload)
                elif frame_type == method_frame and length >= 4:
                    self._method_index = int.from_bytes(payload[:4], "big")
                    target.handle_method(payload)
                elif frame_type == header_frame:
                    target.handle_header(payload)
                else:
                    self._method_index = 0
                    self._on_frame(frame_type, channel, payload)
        except AMQPError as err:
            self._fail(err)
        except Exception as err:  # a bug: say so once, with context, and keep the broker up
            log.exception("internal error on connection %s", self.name)
            self._fail(InternalError(f"{type(err).__name__}: {err}"))
        finally:
            del buf[:pos]

    # -- resource alarms --------------------------------------------------------------

    def set_blocked(self, reason: str | None) -> None:
        """A resource alarm started (``reason``) or ended (None): block or unblock publishing."""
        if self.state is not State.OPEN:
            return
        if reason is not None and not self.publish_blocked:
            self.publish_blocked = True
            if self.client_capability("connection.blocked"):
                self.send_method(0, commands.Connection.Blocked(reason=reason[:255]))
                self._told_blocked = True
        elif reason is None and self.publish_blocked:
            self.publish_blocked = False
            if self._told_blocked:
                self.send_method(0, commands.Connection.Unblocked())
                self._told_blocked = False
            if self._reading_paused and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
                self.loop.call_soon(self._process)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
            log.info("connection %s blocked: a publish waits for the resource alarm to clear",
                     self.name)

    def _lose_framing(self, error: FrameError) -> None:
        """Frame boundaries are lost: nothing more can be parsed, not even a Close-Ok."""
        self._discard_input = True
        self._buffer.clear()
        self._fail(error)

    # -- output -----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def send_parts(self, parts: list[bytes], size: int = 0) -> None:
        """Queue frames for the next flush; ``size`` counts a delivery's bytes against the
        output limit, past which consumers wait for the flush (a no-ack consumer on a deep
        queue would otherwise take the whole backlog into memory in one go)."""
        self._out += parts
        if size:
            self._out_bytes += size
            if self._out_bytes > OUTPUT_LIMIT:
                self.writable = False
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def send_method(self, channel: int, method: Any) -> None:
        self.send(framing.encode_method(channel, method))

    def confirm_later(self, channel: Channel) -> None:
        """Ask for ``channel``'s pending publisher confirms to be written with the next flush."""
        self._confirming.add(channel)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def hold_until_durable(self, store: MessageStore, ticket: int) -> None:
        """Write nothing sent from now on until batch ``ticket`` of ``store`` is on disk.

        A declare-ok or commit-ok promises durability; so it, and everything queued with it on
        this connection, waits for the commit.
        """
        if ticket <= store.durable_ticket:
            return
        self._holds += 1
        store.when_durable(ticket, self._release_hold)

    def _release_hold(self, ok: bool) -> None:
        self._holds -= 1
        if not ok:
            self.close(541, "INTERNAL_ERROR - the message store failed; see the broker log")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._holds:
            return  # `_release_hold` flushes once the disk has caught up
        if self._confirming:
            for channel in self._confirming:
                self._out += channel.take_confirms()
            self._confirming.clear()
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
            self._sent = True
        self._out.clear()
        if self._out_bytes:
            self._out_bytes = 0
            if not self.writable and not self._transport_paused and self.state is State.OPEN:
                self._writable_again()

    # -- frames -----------------------------------------------------------------------

    def _on_protocol_header(self) -> bool:
        if len(self._buffer) < 8:
            if not framing.PROTOCOL_HEADER.startswith(bytes(self._buffer)):
                self._reject_protocol()
            return False
        if bytes(self._buffer[:8]) != framing.PROTOCOL_HEADER:
            self._reject_protocol()
            return False
        del self._buffer[:8]
        self.state = State.AWAIT_START_OK
        self.send_method(0, commands.Connection.Start(
            server_properties=self._server_properties(), mechanisms=" ".join(MECHANISMS),
            locales="en_US",
        ))
        return True

    def _reject_protocol(self) -> None:
        # Spec 4.2.2: answer a bad header with the header we speak, then close.
        log.info("rejecting connection from %s: not AMQP 0-9-1", self.peer)
        self.state = State.CLOSED
        if self.transport is not None:
            self.transport.write(framing.PROTOCOL_HEADER)
            self.transport.close()

    def _server_properties(self) -> dict[str, Any]:
        return {
            "product": "Leveret",
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "copyright": "Leveret authors, MIT licence",
            "information": "An AMQP 0-9-1 broker in Python",
            "cluster_name": f"leveret@{socket.gethostname()}",
            "capabilities": dict(CAPABILITIES),
        }

    def _on_frame(self, frame_type: int, channel_id: int, payload: bytes) -> None:
        if frame_type == framing.FRAME_HEARTBEAT:
            if payload:
                raise FrameError(f"type 8, {len(payload)} octets: unknown_frame")
            if channel_id != 0:
                raise UnexpectedFrame(f"type 8, heartbeat on channel {channel_id}")
            return
        if self.state is State.CLOSING:
            self._on_frame_while_closing(frame_type, channel_id, payload)
            return
        if frame_type == framing.FRAME_METHOD:
            if len(payload) >= 4:
                self._method_index = int.from_bytes(payload[:4], "big")
            if channel_id == 0:
                self._on_connection_method(payload)
                return
            channel = self.channels.get(channel_id)
            if channel is None:
                self._on_method_for_new_channel(channel_id, payload)
                return
            channel.handle_method(payload)
            return
        if frame_type in (framing.FRAME_HEADER, framing.FRAME_BODY):
            channel = self.channels.get(channel_id)
            if channel is None or self.state is not State.OPEN:
                raise UnexpectedFrame(f"expected method frame, got non method frame instead "
                                      f"(type {frame_type} on channel {channel_id})")
            if frame_type == framing.FRAME_HEADER:
                channel.handle_header(payload)
            else:
                channel.handle_body(payload)
            return
        raise FrameError(f"type {frame_type}, {len(payload)} octets: unknown_frame")

    def _on_frame_while_closing(self, frame_type: int, channel_id: int, payload: bytes) -> None:
        # After our Connection.Close only Close-Ok (or a crossing Close) matters.
        if frame_type != framing.FRAME_METHOD or channel_id != 0:
            return
        index = self.decode(payload).index
        if index in (commands.Connection.CloseOk.index, commands.Connection.Close.index):
            if index == commands.Connection.Close.index:
                self.send_method(0, commands.Connection.CloseOk())
            self._close_transport()

    def _on_method_for_new_channel(self, channel_id: int, payload: bytes) -> None:
        if self.state is not State.OPEN:
            raise ChannelStateError(f"channel {channel_id} used before connection.open")
        method = self.decode(payload)
        if not isinstance(method, commands.Channel.Open):
            raise ChannelStateError(f"expected 'channel.open' on channel {channel_id}, "
                                    f"got '{method.name}'")
        # Like RabbitMQ, channel_max limits how many channels are open, not their numbers.
        if len(self.channels) >= self.channel_max:
            raise NotAllowed(f"number of channels opened ({len(self.channels)}) has reached "
                             f"the negotiated channel_max ({self.channel_max})")
        assert self.vhost is not None and self.user is not None
        channel = Channel(self, channel_id, self.vhost, self.user)
        self.channels[channel_id] = channel
        self.send_method(channel_id, commands.Channel.OpenOk())

    def decode(self, payload: bytes) -> Any:
        try:
            return framing.decode_method(payload)
        except framing.UnknownMethod as err:
            raise CommandInvalid(str(err)) from err
        except framing.MethodSyntaxError as err:
            raise FrameError(str(err)) from err

    def channel_closed(self, channel: Channel) -> None:
        """The channel finished its close handshake; its id may be reused."""
        if self.channels.get(channel.id) is channel:
            del self.channels[channel.id]
        self._confirming.discard(channel)

    # -- connection-class methods -----------------------------------------------------

    def _on_connection_method(self, payload: bytes) -> None:
        method = self.decode(payload)
        expected = _EXPECTED.get(self.state)
        if expected is not None and not isinstance(method, expected | commands.Connection.Close):
            raise CommandInvalid(f"expected '{expected.name}', got '{method.name}'")
        if expected is None and not isinstance(method, _RUNNING_METHODS):
            raise ChannelStateError("unexpected method in connection state running")
        handler = self._HANDLERS[type(method)]
        handler(self, method)

    def _on_start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        response = method.response if isinstance(method.response, bytes) else b""
        self.user = self.server.users.authenticate(
            method.mechanism, response, from_loopback=self.from_loopback
        )
        self.state = State.AWAIT_TUNE_OK
        self.send_method(0, commands.Connection.Tune(
            channel_max=self.settings.channel_max, frame_max=self.settings.frame_max,
            heartbeat=self.settings.heartbeat,
        ))

    def _on_tune_ok(self, method: commands.Connection.TuneOk) -> None:
        frame_max = method.frame_max or self.settings.frame_max
        if frame_max < framing.FRAME_MIN_SIZE:
            raise NotAllowed(f"frame_max={frame_max} < {framing.FRAME_MIN_SIZE} min size")
        if frame_max > self.settings.frame_max:
            raise NotAllowed(f"frame_max={frame_max} > {self.settings.frame_max} max size")
        channel_max = method.channel_max or self.settings.channel_max
        if channel_max > self.settings.channel_max:
            raise NotAllowed(f"channel_max={channel_max} > {self.settings.channel_max} max")
        self.frame_max, self.channel_max = frame_max, channel_max
        self.heartbeat = method.heartbeat
        self.state = State.AWAIT_OPEN

    def _on_open(self, method: commands.Connection.Open) -> None:
        assert self.user is not None
        vhost = self.server.vhosts.get(method.virtual_host)
        if vhost is None:
            raise NotAllowed(f"vhost {method.virtual_host} not found")
        if self.user.permission(vhost.name) is None:
            raise NotAllowed(f"access to vhost '{vhost.name}' refused for user "
                             f"'{self.user.name}'")
        self.vhost = vhost
        self.state = State.OPEN
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self.heartbeat:
            self._schedule_heartbeat()
        self.send_method(0, commands.Connection.OpenOk())
        if self.server.alarm is not None:
            self.set_blocked(self.server.alarm)
        log.info("connection %s authenticated as '%s', vhost '%s'%s", self.peer,
                 self.user.name, vhost.name, self._client_label())

    def client_capability(self, name: str) -> bool:
        capabilities = self.client_properties.get("capabilities")
        return isinstance(capabilities, dict) and bool(capabilities.get(name))

    def _client_label(self) -> str:
        name = self.client_properties.get("connection_name")
        product = self.client_properties.get("product")
        label = ", ".join(str(x) for x in (name, product) if x)
        return f" ({label})" if label else ""

    def _on_close(self, method: commands.Connection.Close) -> None:
        self.send_method(0, commands.Connection.CloseOk())
        self._close_transport()

    def _on_close_ok(self, method: commands.Connection.CloseOk) -> None:
        self._close_transport()

    def _on_update_secret(self, method: commands.Connection.UpdateSecret) -> None:
        self.send_method(0, commands.Connection.UpdateSecretOk())

    _HANDLERS: dict[type[Method], Callable[[Connection, Any], None]] = {
        commands.Connection.StartOk: _on_start_ok,
        commands.Connection.TuneOk: _on_tune_ok,
        commands.Connection.Open: _on_open,
        commands.Connection.Close: _on_close,
        commands.Connection.CloseOk: _on_close_ok,
        commands.Connection.UpdateSecret: _on_update_secret,
    }

    # -- closing ----------------------------------------------------------------------

    def _fail(self, error: AMQPError) -> None:
        """A connection-level error: say why, then close (spec 4.2.5)."""
        if self.state in (State.CLOSING, State.CLOSED):
            return  # already closing: the close-ok timer ends it
        if isinstance(error, LoginRefused) or self.state is State.AWAIT_START_OK:
            log.warning("connection %s refused: %s", self.peer, error.reply_text)
            if not self.client_capability("authentication_failure_close"):
                # A client that did not ask for a Close expects the socket to drop (spec 4.2.3).
                self.state = State.CLOSED
                self._close_transport()
                return
        else:
            log.warning("closing connection %s: %s", self.name, error.reply_text)
        self.close(error.reply_code, error.reply_text, self._method_index)

    def close(self, reply_code: int, reply_text: str, method_index: int = 0) -> None:
        """Send Connection.Close, release every channel, and wait briefly for Close-Ok."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.state = State.CLOSING
        for channel in list(self.channels.values()):
            channel.release()
        self.channels.clear()
        self.send_method(0, commands.Connection.Close(
            reply_code=reply_code, reply_text=reply_text, class_id=method_index >> 16,
            method_id=method_index & 0xFFFF,
        ))
        self._timers.append(self.loop.call_later(CLOSE_OK_TIMEOUT, self._close_transport))

    def force_close(self, reason: str) -> None:
        """Broker shutdown: 320 CONNECTION_FORCED, as RabbitMQ sends."""
        if self.state is State.OPEN:
            err = ConnectionForced(f"broker forced connection closure with reason '{reason}'")
            self.close(err.reply_code, err.reply_text)
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _handshake_timeout(self) -> None:
        if self.state not in (State.OPEN, State.CLOSING, State.CLOSED):
            log.warning("closing connection %s: handshake not finished within %.0f s",
                        self.peer, self.settings.handshake_timeout)
            self.state = State.CLOSED
            if self.transport is not None:
                self.transport.abort()

    # -- heartbeats -------------------------------------------------------------------

    def _schedule_heartbeat(self) -> None:
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self.loop.call_later(self.heartbeat / 2, self._heartbeat_tick))

    def _heartbeat_tick(self) -> None:
        """Every half interval: send a heartbeat if we were quiet; drop a peer silent too long."""
        if self.state is State.CLOSED or self.transport is None:
            return
        if self._heard:
            self._missed = 0
        else:
            self._missed += 1
        self._heard = False
        if self._missed >= 4:  # two full heartbeat intervals without a byte
            log.warning("closing connection %s: missed heartbeats from client, timeout: %ds",
                        self.name, self.heartbeat)
            self.state = State.CLOSED
            self.transport.abort()
            return
        if not self._sent and not self._out:
            self.transport.write(framing.HEARTBEAT_FRAME)
        self._sent = False
        self._schedule_heartbeat()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False
