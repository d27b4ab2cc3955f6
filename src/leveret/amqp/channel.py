"""One AMQP channel: a small handler per method, named after it, dispatched through a dict.

The channel owns what AMQP scopes to a channel: consumers, delivery tags and the deliveries
awaiting an ack, prefetch (per consumer and global), publisher confirms, transactions and the
content of the message being received. Everything else is a call into `core.vhost`.

Handlers open with guard clauses and raise domain errors; `handle_*` turns a channel error
into Channel.Close (connection errors propagate to the connection).
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from leveret.amqp import framing, topology
from leveret.amqp.auth import User
from leveret.core.delays import delay_of
from leveret.core.exchanges import Exchange
from leveret.core.message import Entry, Message, PropertiesError, expiration_problem
from leveret.core.queue import Consumer, Queue
from leveret.core.timers import Timer
from leveret.core.vhost import VHost, server_generated_name
from leveret.errors import (
    AccessRefused,
    ChannelError,
    ChannelStateError,
    CommandInvalid,
    FrameError,
    NotAllowed,
    NotFound,
    NotImplementedFeature,
    PreconditionFailed,
    UnexpectedFrame,
)

if TYPE_CHECKING:
    from leveret.amqp.connection import Connection

log = logging.getLogger(__name__)

_PUBLISH = framing.PUBLISH.to_bytes(4, "big")
_ACK = framing.ACK.to_bytes(4, "big")
PUBLISH_TARGETS = 256  # distinct Basic.Publish methods a channel remembers (see _on_publish)
DELIVERY_OVERHEAD = 100  # a delivery's method and header frames, roughly, in bytes

Delivery = tuple[Queue, Entry, Consumer | None]
"""An unacknowledged delivery: its queue, its entry and the consumer (None for basic.get)."""


class Transaction:
    """What a transactional channel has done since its last commit or rollback."""

    __slots__ = ("acks", "drops", "publishes", "requeues")

    def __init__(self) -> None:
        self.publishes: list[tuple[Exchange, bool, Message]] = []
        self.acks: list[tuple[int, Delivery]] = []
        self.requeues: list[tuple[int, Delivery]] = []
        self.drops: list[tuple[int, Delivery]] = []

    def taken(self) -> list[tuple[int, Delivery]]:
        return self.acks + self.requeues + self.drops


class Channel:
    """The server side of one channel of a connection."""

    def __init__(self, conn: Connection, channel_id: int, vhost: VHost, user: User) -> None:
        self.conn = conn
        self.id = channel_id
        self.vhost = vhost
        self.user = user
        self.closing = False
        self.consumers: dict[str, Consumer] = {}
        self._tag_bytes: dict[str, bytes] = {}
        self._unacked: OrderedDict[int, Delivery] = OrderedDict()
        self._next_tag = 0
        self._consumer_prefetch = 0
        self._global_prefetch = 0
        self._consumer_unacked = 0
        self._released = False
        self.last_queue = ""
        self._allowed: set[tuple[str, str, str]] = set()
        self._store = vhost.store
        self._scheduler = vhost.scheduler
        self._timeout_ms = conn.settings.consumer_timeout
        self._deadlines: list[tuple[float, int, int]] = []  # (deadline, delivery tag, ms)
        self._timeout_timer: Timer | None = None
        self._confirm = False
        self._publish_seq = 0
        self._confirmed = 0
        # Publishes not yet confirmable, in order: (publish seq, store batch, ack). ack is
        # False for a publish refused by a full queue (it gets a nack).
        self._unconfirmed: deque[tuple[int, int, bool]] = deque()
        self._awaited_ticket = 0
        self._store_failed = False
        self._tx: Transaction | None = None
        # The message being received: Basic.Publish, then a header, then body frames.
        self._publishing: tuple[Exchange, str, bool] | None = None
        self._publish_targets: dict[bytes, tuple[Exchange, str, bool]] = {}
        self._expect_body = False
        self._properties = b""
        self._body_size = 0
        self._body: list[bytes] = []
        self._received = 0

    def __repr__(self) -> str:
        return f"<Channel {self.id} of {self.conn.name}>"

    # -- frames in --------------------------------------------------------------------

    def handle_method(self, payload: bytes) -> None:
        if self.closing:
            self._method_while_closing(payload)
            return
        if self._publishing is not None:
            if self._expect_body:
                raise UnexpectedFrame("expected content body, got non content body frame instead")
            raise UnexpectedFrame(
                "expected content header for class 60, got non content header frame instead"
            )
        head = payload[:4]
        try:
            if head == _PUBLISH:
                self._on_publish(payload)
            elif head == _ACK:
                self._on_ack(payload)
            else:
                method = self.conn.decode(payload)
                handler = _HANDLERS.get(type(method))
                if handler is None:  # a connection method, or one only a server sends
                    raise CommandInvalid("unimplemented method")
                changes = self._store.changes
                handler(self, method)
                if self._store.changes != changes:
                    # A durable definition changed: its reply waits until it is on disk.
                    self.conn.hold_until_durable(self._store, self._store.ticket())
        except ChannelError as err:
            self._fail(err, int.from_bytes(head, "big"))

    def handle_header(self, payload: bytes) -> None:
        if self.closing:
            return
        if self._publishing is None:
            raise UnexpectedFrame("expected method frame, got non method frame instead")
        if self._expect_body:
            raise UnexpectedFrame("expected content body, got non content body frame instead")
        try:
            class_id, body_size, properties = framing.parse_content_header(payload)
        except framing.MethodSyntaxError as err:
            raise FrameError(str(err)) from err
        if class_id != framing.BASIC_CLASS:
            raise UnexpectedFrame(f"expected content header for class 60, got one for class "
                                  f"{class_id} instead")
        limit = self.conn.settings.max_message_size
        if body_size > limit:
            self._publishing = None
            self._fail(PreconditionFailed(
                f"message size {body_size} is larger than configured max size {limit}"
            ), framing.PUBLISH)
            return
        self._properties = properties
        self._body_size = body_size
        self._received = 0
        self._expect_body = True
        if body_size == 0:
            self._content_complete(b"")

    def handle_body(self, payload: bytes) -> None:
        if self.closing:
            return
        if not self._expect_body:
            raise UnexpectedFrame("expected method frame, got non method frame instead")
        self._received += len(payload)
        if self._received > self._body_size:
            raise UnexpectedFrame(f"content body of {self._received} bytes exceeds the "
                              f"{self._body_size} bytes announced in its header")
        if self._received == self._body_size:
            if self._body:
                self._body.append(payload)
                body = b"".join(self._body)
                self._body = []
            else:
                body = payload
            self._content_complete(body)
        else:
            self._body.append(payload)

    def _content_complete(self, body: bytes) -> None:
        assert self._publishing is not None
        exchange, routing_key, mandatory = self._publishing
        self._publishing = None
        self._expect_body = False
        try:
            self._publish(exchange, routing_key, mandatory, self._properties, body)
        except ChannelError as err:
            self._fail(err, framing.PUBLISH)

    def _method_while_closing(self, payload: bytes) -> None:
        # After our Channel.Close everything but Close-Ok (or a crossing Close) is dropped.
        method = self.conn.decode(payload)
        if isinstance(method, commands.Channel.Close):
            self.conn.send_method(self.id, commands.Channel.CloseOk())
            self.conn.channel_closed(self)
        elif isinstance(method, commands.Channel.CloseOk):
            self.conn.channel_closed(self)

    def _fail(self, error: ChannelError, method_index: int) -> None:
        """A channel error: tell the client why and release what the channel held."""
        log.info("channel %d of %s: %s", self.id, self.conn.name, error.reply_text)
        self.closing = True
        self.release()
        self.conn.send_method(self.id, commands.Channel.Close(
            reply_code=error.reply_code, reply_text=error.reply_text,
            class_id=method_index >> 16, method_id=method_index & 0xFFFF,
        ))

    # -- publishing -------------------------------------------------------------------

    def _on_publish(self, payload: bytes) -> None:
        # A publisher sends the same Basic.Publish bytes again and again: what they resolved
        # to is kept, while the exchange they name is still the one of that name.
        known = self._publish_targets.get(payload)
        if known is not None and self.vhost.exchanges.get(known[0].name) is known[0]:
            self._publishing = known
            return
        try:
            exchange_name, routing_key, mandatory, immediate = framing.parse_publish(payload)
        except framing.MethodSyntaxError as err:
            raise FrameError(str(err)) from err
        if immediate:
            raise NotImplementedFeature("immediate=true")
        exchange = self.vhost.get_exchange(exchange_name)
        if exchange.internal:
            raise AccessRefused(f"cannot publish to internal exchange '{exchange_name}' in "
                                f"vhost '{self.vhost.name}'")
        self.check_permission("write", "exchange", exchange_name)
        self._publishing = (exchange, routing_key, mandatory)
        if len(self._publish_targets) >= PUBLISH_TARGETS:
            self._publish_targets.clear()
        self._publish_targets[payload] = self._publishing

    def _publish(
        self, exchange: Exchange, routing_key: str, mandatory: bool, properties: bytes, body: bytes
    ) -> None:
        try:
            message = Message.from_wire(exchange.name, routing_key, properties, body)
        except PropertiesError as err:
            raise FrameError(f"cannot decode content header properties: {err}") from err
        if message.user_id is not None and message.user_id != self.user.name:
            raise PreconditionFailed(f"user_id property set to '{message.user_id}' but "
                                     f"authenticated user was '{self.user.name}'")
        if message.expiration is not None:
            problem = expiration_problem(message.expiration)
            if problem is not None:
                raise PreconditionFailed(f"invalid expiration '{message.expiration}': "
                                         f"{problem}")
        if self._tx is not None:
            self._tx.publishes.append((exchange, mandatory, message))
            return
        delay = delay_of(message) if message.headers_at >= 0 else 0
        if delay:
            self.vhost.delays.add(message, delay)
            stored, refused = message.persistent, False
        else:
            stored, refused = self._route(exchange, mandatory, message)
        if self._confirm:
            self._publish_seq += 1
            if refused:  # a full queue with x-overflow reject-publish: the publisher is told
                self._unconfirmed.append((self._publish_seq, 0, False))
            elif stored:
                self._confirm_when_durable()
            self.conn.confirm_later(self)

    def _confirm_when_durable(self) -> None:
        """The last publish reached the disk store: its confirm waits for the commit."""
        ticket = self._store.ticket()
        if ticket <= self._store.durable_ticket:
            return
        self._unconfirmed.append((self._publish_seq, ticket, True))
        if ticket != self._awaited_ticket:
            self._awaited_ticket = ticket
            self._store.when_durable(ticket, self._on_durable)

    def _on_durable(self, ok: bool) -> None:
        if not ok:
            self._store_failed = True
        self.conn.confirm_later(self)

    def _route(self, exchange: Exchange, mandatory: bool, message: Message
               ) -> tuple[bool, bool]:
        """Route and enqueue. Return (stored, refused): whether a durable queue now holds a
        persistent copy, and whether a full queue refused it."""
        try:
            queues = self.vhost.route(exchange, message)
        except PropertiesError as err:
            raise PreconditionFailed(str(err)) from err
        if not queues:
            if mandatory:
                self.conn.send_parts([
                    framing.return_method(self.id, 312, "NO_ROUTE", message.exchange,
                                          message.routing_key),
                    *framing.content_frames(self.id, message.properties, message.body,
                                            self.conn.frame_max),
                ])
            return False, False
        stored = refused = False
        for queue in queues:
            if queue.publish(message):
                stored = stored or queue.durable
            else:
                refused = True
        return stored and message.persistent, refused

    def take_confirms(self) -> list[bytes]:
        """Basic.Ack (and, if the store failed, Basic.Nack) frames for every publish settled
        since the last call: acks cover publishes up to the first still waiting for the disk."""
        if self.closing or self._publish_seq == self._confirmed:
            return []
        durable = self._store.durable_ticket
        waiting = self._unconfirmed
        frames = []
        while waiting and (waiting[0][1] <= durable or self._store_failed):
            seq, ticket, ack = waiting.popleft()
            if ack and ticket <= durable:
                continue  # on disk: covered by the multiple ack below
            # Refused by a full queue, or never to be durable: ack what precedes, nack it.
            if seq - 1 > self._confirmed:
                frames.append(framing.confirm_frame(self.id, seq - 1,
                                                    seq - 1 - self._confirmed > 1))
            frames.append(framing.confirm_frame(self.id, seq, False, ack=False))
            self._confirmed = seq
        upto = waiting[0][0] - 1 if waiting else self._publish_seq
        if upto > self._confirmed:
            frames.append(framing.confirm_frame(self.id, upto, upto - self._confirmed > 1))
            self._confirmed = upto
        return frames

    # -- delivering (the ConsumerChannel protocol of core.queue) -----------------------

    def can_deliver(self, consumer: Consumer) -> bool:
        if self.closing or not self.conn.writable:
            return False
        if consumer.no_ack or not self._global_prefetch:
            return True
        return self._consumer_unacked < self._global_prefetch

    def deliver(self, consumer: Consumer, queue: Queue, entry: Entry) -> None:
        self._next_tag += 1
        tag = self._next_tag
        if not consumer.no_ack:
            self._unacked[tag] = (queue, entry, consumer)
            self._consumer_unacked += 1
        message = entry.message
        properties = queue.delivery_properties(entry)
        parts = framing.content_frames(self.id, properties, message.body, self.conn.frame_max)
        if not consumer.no_ack and self._timeout_ms:
            self._watch(tag, queue)
        parts.insert(0, framing.deliver_method(
            self.id, self._tag_bytes[consumer.tag], tag, entry.redelivered, message.exchange,
            message.routing_key,
        ))
        self.conn.send_parts(parts, len(message.body) + DELIVERY_OVERHEAD)

    def consumer_cancelled(self, consumer: Consumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        self._tag_bytes.pop(consumer.tag, None)
        if self.conn.client_capability("consumer_cancel_notify"):
            self.conn.send_method(self.id, commands.Basic.Cancel(consumer_tag=consumer.tag,
                                                                 nowait=True))

    # -- consumer timeout -------------------------------------------------------------

    def _watch(self, tag: int, queue: Queue) -> None:
        """Close the channel (406) if delivery ``tag`` is still unacknowledged after the
        consumer timeout (the queue's x-consumer-timeout, or the broker's)."""
        timeout = queue.settings.consumer_timeout or self._timeout_ms
        deadline = self._scheduler.now() + timeout / 1000
        heapq.heappush(self._deadlines, (deadline, tag, timeout))
        if self._timeout_timer is None or self._timeout_timer.when > deadline:
            if self._timeout_timer is not None:
                self._timeout_timer.cancel()
            self._timeout_timer = self._scheduler.call_at(deadline, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timeout_timer = None
        deadlines = self._deadlines
        now = self._scheduler.now()
        while deadlines and deadlines[0][0] <= now:
            _, tag, timeout = heapq.heappop(deadlines)
            if tag in self._unacked and not self.closing:
                self._deadlines.clear()
                self._fail(PreconditionFailed(
                    f"delivery acknowledgement on channel {self.id} timed out. Timeout value "
                    f"used: {timeout} ms. This timeout value can be configured, see consumers "
                    "doc guide to learn more"), 0)
                return
        if deadlines:
            self._timeout_timer = self._scheduler.call_at(deadlines[0][0], self._on_timeout)

    # -- acknowledgements -------------------------------------------------------------

    def _on_ack(self, payload: bytes) -> None:
        tag, multiple, _ = self._parse_ack(payload)
        taken = self._take(tag, multiple)
        if self._tx is not None:
            self._tx.acks += taken
            return
        self._settle(taken)

    def _on_reject_or_nack(self, method: Any) -> None:
        multiple = bool(getattr(method, "multiple", False))
        taken = self._take(method.delivery_tag, multiple)
        if self._tx is not None:
            (self._tx.requeues if method.requeue else self._tx.drops).extend(taken)
            return
        if method.requeue:
            self._requeue(taken)
        else:
            self._drop(taken)

    def _parse_ack(self, payload: bytes) -> tuple[int, bool, bool]:
        try:
            return framing.parse_ack(payload)
        except framing.MethodSyntaxError as err:
            raise FrameError(str(err)) from err

    def _take(self, tag: int, multiple: bool) -> list[tuple[int, Delivery]]:
        """Remove and return the deliveries an ack/nack/reject names (RabbitMQ's rules)."""
        unacked = self._unacked
        if not multiple:
            delivery = unacked.pop(tag, None)
            if delivery is None:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            return [(tag, delivery)]
        if tag == 0:
            taken = list(unacked.items())
            unacked.clear()
            return taken
        if tag not in unacked:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        taken = []
        while unacked:
            first = next(iter(unacked))
            if first > tag:
                break
            taken.append(unacked.popitem(last=False))
        return taken

    def _settle(self, taken: list[tuple[int, Delivery]]) -> None:
        for _, (queue, entry, consumer) in taken:
            queue.settle(entry, consumer)
            if consumer is not None:
                self._consumer_unacked -= 1
        self._redispatch(queue for _, (queue, _, consumer) in taken if consumer is not None)

    def _drop(self, taken: list[tuple[int, Delivery]]) -> None:
        """Rejected without requeue: each dies in its queue (to its dead-letter exchange)."""
        for _, (queue, entry, consumer) in taken:
            queue.reject(entry, consumer)
            if consumer is not None:
                self._consumer_unacked -= 1
        self._redispatch(queue for _, (queue, _, consumer) in taken if consumer is not None)

    def _requeue(self, taken: Iterable[tuple[int, Delivery]]) -> None:
        by_queue: dict[Queue, list[tuple[Entry, Consumer | None]]] = {}
        for _, (queue, entry, consumer) in taken:
            by_queue.setdefault(queue, []).append((entry, consumer))
            if consumer is not None:
                self._consumer_unacked -= 1
        for queue, deliveries in by_queue.items():
            queue.requeue(deliveries)
        self._redispatch(by_queue)

    def _redispatch(self, queues: Iterable[Queue]) -> None:
        if self._global_prefetch:  # a freed channel-wide slot may serve any of our queues
            queues = [c.queue for c in self.consumers.values()]
        for queue in set(queues):
            queue.dispatch()

    def release(self) -> None:
        """The channel is closing: cancel its consumers and requeue what it had not acked."""
        if self._released:
            return
        self._released = True
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
            self._timeout_timer = None
        consumers = list(self.consumers.values())
        self.consumers.clear()
        self.vhost.remove_consumers(consumers)
        taken = list(self._unacked.items())
        self._unacked.clear()
        if self._tx is not None:
            taken += self._tx.taken()
            self._tx = None
        taken.sort(key=lambda item: item[0])
        self._requeue(taken)

    # -- permission checks ------------------------------------------------------------

    def check_permission(self, kind: str, resource_kind: str, name: str) -> None:
        key = (kind, resource_kind, name)
        if key in self._allowed:
            return
        self.user.check(self.vhost.name, kind, resource_kind, name)
        if len(self._allowed) > 1024:
            self._allowed.clear()
        self._allowed.add(key)

    def resolve_queue_name(self, name: str) -> str:
        """An empty queue name means the channel's last declared queue (spec 1.7.2.x)."""
        if name:
            return name
        if not self.last_queue:
            raise NotFound("no previously declared queue")
        return self.last_queue

    # -- channel class ----------------------------------------------------------------

    def on_channel_open(self, method: commands.Channel.Open) -> None:
        raise ChannelStateError(f"second 'channel.open' seen on channel {self.id}")

    def on_channel_flow(self, method: commands.Channel.Flow) -> None:
        if not method.active:  # RabbitMQ 3.x does not implement pausing a channel either
            raise NotImplementedFeature("active=false")
        self.conn.send_method(self.id, commands.Channel.FlowOk(active=True))

    def on_channel_close(self, method: commands.Channel.Close) -> None:
        self.release()
        self.conn.send_method(self.id, commands.Channel.CloseOk())
        self.conn.channel_closed(self)

    def on_channel_close_ok(self, method: commands.Channel.CloseOk) -> None:
        raise ChannelStateError(f"unexpected 'channel.close-ok' on channel {self.id}")

    # -- basic class ------------------------------------------------------------------

    def on_basic_qos(self, method: commands.Basic.Qos) -> None:
        if method.prefetch_size:
            raise NotImplementedFeature(f"prefetch_size!=0 ({method.prefetch_size})")
        if method.global_:
            self._global_prefetch = method.prefetch_count
        else:
            # RabbitMQ applies this only to consumers created afterwards. Leveret also applies
            # it to the channel's running consumers: kombu sends global=false to brokers that
            # are not RabbitMQ and expects the new limit at once (Celery raises it for each
            # task with a countdown it holds), and a limit that can change while consuming is
            # what RabbitMQ users ask for (rabbitmq-server#11948).
            self._consumer_prefetch = method.prefetch_count
            for consumer in self.consumers.values():
                consumer.prefetch = method.prefetch_count
        self.conn.send_method(self.id, commands.Basic.QosOk())
        self._redispatch(c.queue for c in self.consumers.values())

    def on_basic_consume(self, method: commands.Basic.Consume) -> None:
        name = self.resolve_queue_name(method.queue)
        self.check_permission("read", "queue", name)
        queue = self.vhost.get_queue(name, self.conn)
        tag = method.consumer_tag or server_generated_name("amq.ctag-")
        if tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        if queue.exclusive_use_conflict(method.exclusive):
            raise AccessRefused(f"queue '{queue.name}' in vhost '{self.vhost.name}' in "
                                "exclusive use")
        consumer = Consumer(tag, queue, self, no_ack=method.no_ack, exclusive=method.exclusive,
                            prefetch=self._consumer_prefetch, arguments=method.arguments)
        self.consumers[tag] = consumer
        self._tag_bytes[tag] = framing.shortstr(tag)
        if not method.nowait:  # consume-ok must precede the first delivery
            self.conn.send_method(self.id, commands.Basic.ConsumeOk(consumer_tag=tag))
        self.vhost.add_consumer(consumer)

    def on_basic_cancel(self, method: commands.Basic.Cancel) -> None:
        consumer = self.consumers.pop(method.consumer_tag or "", None)
        if consumer is not None:
            self.vhost.remove_consumer(consumer)
        if not method.nowait:
            self.conn.send_method(self.id, commands.Basic.CancelOk(
                consumer_tag=method.consumer_tag))

    def on_basic_get(self, method: commands.Basic.Get) -> None:
        name = self.resolve_queue_name(method.queue)
        self.check_permission("read", "queue", name)
        queue = self.vhost.get_queue(name, self.conn)
        entry = queue.get()
        if entry is None:
            self.conn.send_method(self.id, commands.Basic.GetEmpty())
            return
        self._next_tag += 1
        if method.no_ack:
            queue.settle(entry, None)
        else:
            self._unacked[self._next_tag] = (queue, entry, None)
        message = entry.message
        if not method.no_ack and self._timeout_ms:
            self._watch(self._next_tag, queue)
        self.conn.send_parts([
            framing.get_ok_method(self.id, self._next_tag, entry.redelivered, message.exchange,
                                  message.routing_key, queue.message_count),
            *framing.content_frames(self.id, queue.delivery_properties(entry), message.body,
                                    self.conn.frame_max),
        ])

    def on_basic_recover(self, method: commands.Basic.Recover) -> None:
        self._recover(method.requeue)
        self.conn.send_method(self.id, commands.Basic.RecoverOk())

    def on_basic_recover_async(self, method: commands.Basic.RecoverAsync) -> None:
        self._recover(method.requeue)

    def _recover(self, requeue: bool) -> None:
        if not requeue:
            raise NotImplementedFeature("requeue=false")
        taken = list(self._unacked.items())
        self._unacked.clear()
        self._requeue(taken)

    # -- confirm and tx classes -------------------------------------------------------

    def on_confirm_select(self, method: commands.Confirm.Select) -> None:
        if self._tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self._confirm = True
        if not method.nowait:
            self.conn.send_method(self.id, commands.Confirm.SelectOk())

    def on_tx_select(self, method: commands.Tx.Select) -> None:
        if self._confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if self._tx is None:
            self._tx = Transaction()
        self.conn.send_method(self.id, commands.Tx.SelectOk())

    def on_tx_commit(self, method: commands.Tx.Commit) -> None:
        tx = self._transaction()
        self._tx = Transaction()
        stored = False
        for exchange, mandatory, message in tx.publishes:
            delay = delay_of(message) if message.headers_at >= 0 else 0
            if delay:
                self.vhost.delays.add(message, delay)
                stored = stored or message.persistent
            else:
                stored = self._route(exchange, mandatory, message)[0] or stored
        self._settle(tx.acks)
        self._requeue(tx.requeues)
        self._drop(tx.drops)
        if stored:  # commit-ok (and what follows it) waits until the messages are on disk
            self.conn.hold_until_durable(self._store, self._store.ticket())
        self.conn.send_method(self.id, commands.Tx.CommitOk())

    def on_tx_rollback(self, method: commands.Tx.Rollback) -> None:
        tx = self._transaction()
        self._tx = Transaction()
        # Acks and rejects are undone: those deliveries are unacknowledged again.
        restored = sorted(list(self._unacked.items()) + tx.taken(), key=lambda item: item[0])
        self._unacked = OrderedDict(restored)
        self.conn.send_method(self.id, commands.Tx.RollbackOk())

    def _transaction(self) -> Transaction:
        if self._tx is None:
            raise PreconditionFailed("channel is not transactional")
        return self._tx


_HANDLERS: dict[type, Callable[[Channel, Any], None]] = {
    **topology.HANDLERS,
    commands.Channel.Open: Channel.on_channel_open,
    commands.Channel.Flow: Channel.on_channel_flow,
    commands.Channel.Close: Channel.on_channel_close,
    commands.Channel.CloseOk: Channel.on_channel_close_ok,
    commands.Basic.Qos: Channel.on_basic_qos,
    commands.Basic.Consume: Channel.on_basic_consume,
    commands.Basic.Cancel: Channel.on_basic_cancel,
    commands.Basic.Get: Channel.on_basic_get,
    commands.Basic.Reject: Channel._on_reject_or_nack,
    commands.Basic.Nack: Channel._on_reject_or_nack,
    commands.Basic.Recover: Channel.on_basic_recover,
    commands.Basic.RecoverAsync: Channel.on_basic_recover_async,
    commands.Confirm.Select: Channel.on_confirm_select,
    commands.Tx.Select: Channel.on_tx_select,
    commands.Tx.Commit: Channel.on_tx_commit,
    commands.Tx.Rollback: Channel.on_tx_rollback,
}
