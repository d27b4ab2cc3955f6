"""Queues: ready messages, consumers, prefetch, dispatch, requeue, and what a queue's arguments
ask of it: TTL, length limits, dead-lettering, delivery limits, single active consumer,
deduplication, expiry when unused, priorities (in the store).

A queue holds its ready entries in a `QueueStore` (memory or disk) in delivery order and hands
them to consumers in turn, each within its prefetch window. Deliveries not yet acknowledged are
counted here and tracked by the channel that holds them; the channel settles, rejects or
requeues them through this API.

Expiry. With a queue TTL every message expires in arrival order, so the head is checked (a
timer for the head's deadline, and a check whenever an entry is taken). A message with a TTL
of its own is also indexed in a heap, so it expires where it sits, not only when it reaches
the head (RabbitMQ's head-of-line trap, rabbitmq-server#2074). An entry that expires inside
the store is marked dead and skipped when reached; the store is compacted when the dead
outnumber the living.

No sockets here: a consumer reaches its channel through `ConsumerChannel`, and the queue
reaches its vhost (dead-letter routing, deletion, the scheduler) through `QueueHost`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from leveret.core.arguments import QueueSettings
from leveret.core.deadletter import (
    DELIVERY_LIMIT,
    EXPIRED,
    MAXLEN,
    REJECTED,
    long_value,
)
from leveret.core.dedup import DedupCache
from leveret.core.message import Entry, Message, edit_properties
from leveret.core.tables import FieldTable
from leveret.core.timers import Scheduler, Timer
from leveret.store.base import QueueStore
from leveret.store.memory import MemoryQueueStore

_COMPACT_AT = 1024  # dead entries in a store before it is compacted


def now_ms() -> int:
    return int(time.time() * 1000)


class ConsumerChannel(Protocol):
    """What a queue needs from the channel a consumer lives on."""

    def can_deliver(self, consumer: Consumer) -> bool:
        """False while the channel cannot take more (a full socket, global prefetch)."""
        ...

    def deliver(self, consumer: Consumer, queue: Queue, entry: Entry) -> None:
        """Send ``entry`` to the consumer; the queue has already counted it as delivered."""
        ...

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The broker cancelled the consumer (its queue was deleted)."""
        ...


class QueueHost(Protocol):
    """What a queue needs from its vhost."""

    scheduler: Scheduler

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        """Republish a message that died in ``queue`` to its dead-letter exchange."""
        ...

    def queue_unused(self, queue: Queue) -> None:
        """``queue`` was unused for its x-expires: delete it."""
        ...


class _Detached:
    """The host of a queue outside a vhost (unit tests): dead letters go nowhere."""

    def __init__(self) -> None:
        self.scheduler = Scheduler()

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        pass

    def queue_unused(self, queue: Queue) -> None:
        pass


class Consumer:
    """A subscription of one channel to one queue."""

    __slots__ = ("arguments", "channel", "exclusive", "no_ack", "prefetch", "queue", "tag",
                 "unacked")

    def __init__(
        self,
        tag: str,
        queue: Queue,
        channel: ConsumerChannel,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        prefetch: int = 0,
        arguments: FieldTable | None = None,
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments or {}

    def __repr__(self) -> str:
        return f"<Consumer {self.tag!r} on {self.queue.name!r} unacked={self.unacked}>"

    def has_capacity(self) -> bool:
        # Prefetch limits only deliveries that wait for an ack (RabbitMQ ignores it for no-ack).
        if not self.no_ack and self.prefetch and self.unacked >= self.prefetch:
            return False
        return self.channel.can_deliver(self)


class Queue:
    """One queue of a virtual host."""

    kind = "queue"

    def __init__(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: FieldTable | None = None,
        store: QueueStore | None = None,
        next_seq: int = 0,
        settings: QueueSettings | None = None,
        host: QueueHost | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = dict(arguments or {})
        self.settings = settings if settings is not None else QueueSettings.resolve(
            self.arguments)
        self.host: QueueHost = host if host is not None else _Detached()
        self.unacked_count = 0
        self.deleted = False
        self._ready: QueueStore = store if store is not None else MemoryQueueStore()
        self._consumers: deque[Consumer] = deque()
        self._exclusive_consumer: Consumer | None = None
        self._had_consumer = False
        self._next_seq = next_seq
        self._plain = self.settings.plain
        self._limited = self.settings.limited
        self._ttl = self.settings.message_ttl
        self._ttl_active = self._ttl is not None  # expiry to check when taking entries
        self._ttl_heap: list[tuple[int, int, Entry]] = []  # per-message TTLs
        self._ttl_timer: Timer | None = None
        self._head_timer: Timer | None = None
        self._expires_timer: Timer | None = None
        self._dead = 0  # entries that expired inside the store and wait to be skipped
        self._bytes = 0  # body bytes of ready messages (for x-max-length-bytes)
        self._dedup = (DedupCache(self.settings.cache_ttl, self.settings.cache_size)
                       if self.settings.deduplication else None)
        self.touch()

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={self.message_count} unacked={self.unacked_count}>"

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Messages ready for delivery (not counting unacknowledged ones), as RabbitMQ reports."""
        return len(self._ready) - self._dead

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    @property
    def unused_and_auto_delete(self) -> bool:
        """True once an auto-delete queue that had a consumer has none left."""
        return self.auto_delete and self._had_consumer and not self._consumers

    # -- arriving -------------------------------------------------------------------------

    def publish(self, message: Message) -> bool:
        """Enqueue a message and deliver it at once if a consumer can take it.

        Returns False if the queue refused it (full, with x-overflow reject-publish): the
        publisher is then nacked.
        """
        if self._plain and message.expiration is None:  # the fast path: FIFO, nothing else
            self._next_seq += 1
            self._ready.push(Entry(message, self._next_seq))
            self._bytes += len(message.body)
            if self._consumers:
                self.dispatch()
            return True
        if not self._plain:
            if self._dedup is not None and self._dedup.is_duplicate(message):
                return True  # dropped, but handled: the publisher gets an ack, not a nack
            if not self._admit(message):
                return False
            if self._dedup is not None:
                self._dedup.remember(message)
        self._next_seq += 1
        entry = Entry(message, self._next_seq)
        if self._ttl is not None or message.expiration is not None:
            self._start_clock(entry)
        self._ready.push(entry)
        self._bytes += len(message.body)
        if self._ttl is not None and self._head_timer is None:
            self._arm_head_expiry()
        if self._consumers:
            self.dispatch()
        if (self._ttl == 0 or entry.expires_ms == entry.timestamp_ms > 0) and \
                not entry.delivered and not entry.dead:
            self._expire_in_place(entry)  # a TTL of 0: delivered at once or not at all
        if self._limited:  # after the consumers had their chance, as RabbitMQ does
            self._drop_heads_over_limit()
        return True

    def _admit(self, message: Message) -> bool:
        """False if a full queue refuses the message (x-overflow reject-publish[-dlx])."""
        settings = self.settings
        if settings.limited and settings.overflow != "drop-head" and self._full(message):
            if settings.overflow == "reject-publish-dlx":
                self._dead_letter(message, MAXLEN)
            return False
        return True

    def _full(self, message: Message) -> bool:
        settings = self.settings
        return ((settings.max_length is not None and self.message_count >= settings.max_length)
                or (settings.max_length_bytes is not None
                    and self._bytes + len(message.body) > settings.max_length_bytes))

    def _start_clock(self, entry: Entry) -> None:
        """Stamp an arriving entry and index its expiry."""
        entry.timestamp_ms = now = now_ms()
        own = entry.message.expiration_ms
        if own is not None:
            entry.expires_ms = now + own
            self._ttl_active = True
            heapq.heappush(self._ttl_heap, (entry.expires_ms, entry.seq, entry))
            if self._ttl_timer is None or self._ttl_timer.when > self._due(entry.expires_ms):
                self._arm_ttl_heap()

    # -- leaving ------------------------------------------------------------------------

    def _take(self) -> Entry | None:
        """The next live entry for a consumer (dead and expired ones are dealt with)."""
        store = self._ready
        while True:
            entry = store.pop()
            if entry is None:
                return None
            if entry.dead:
                self._dead -= 1
                continue
            self._bytes -= len(entry.message.body)
            if self._ttl_active and self._expired(entry, now_ms()):
                self._die(entry, EXPIRED)
                continue
            entry.delivered = True
            return entry

    def get(self) -> Entry | None:
        """Take the head entry for basic.get; the caller settles it (at once when no-ack)."""
        self.touch()
        entry = self._take()
        if entry is not None:
            self.unacked_count += 1
        return entry

    def settle(self, entry: Entry, consumer: Consumer | None) -> None:
        """A delivery is finished with (acked)."""
        self.unacked_count -= 1
        if consumer is not None:
            consumer.unacked -= 1
        if not self.deleted:
            self._ready.settle(entry)
            if self._dedup is not None:
                self._dedup.forget(entry.message)

    def reject(self, entry: Entry, consumer: Consumer | None) -> None:
        """A delivery was rejected (or nacked) without requeue: it dies here."""
        self.settle(entry, consumer)
        if not self.deleted:
            self._dead_letter(entry.message, REJECTED)

    def requeue(self, deliveries: Iterable[tuple[Entry, Consumer | None]]) -> None:
        """Put unacknowledged entries back in their original order, marked redelivered; an
        entry past its delivery limit, or expired meanwhile, dies instead.

        The caller dispatches afterwards, once for a batch.
        """
        entries = []
        limit = self.settings.delivery_limit
        now = now_ms() if self._ttl_active else 0
        for entry, consumer in deliveries:
            self.unacked_count -= 1
            if consumer is not None:
                consumer.unacked -= 1
            entry.redelivered = True
            entry.delivered = False
            entry.delivery_count += 1
            if self.deleted:
                continue
            if limit is not None and entry.delivery_count > limit:
                self._die(entry, DELIVERY_LIMIT)
            elif now and self._expired(entry, now):
                self._die(entry, EXPIRED)
            else:
                entries.append(entry)
                self._bytes += len(entry.message.body)
                if entry.expires_ms:
                    heapq.heappush(self._ttl_heap, (entry.expires_ms, entry.seq, entry))
        if entries:
            self._ready.requeue(entries)
            if self._ttl_heap:
                self._arm_ttl_heap()
            if self._ttl is not None:
                self._rearm_head_expiry()
            if self.settings.limited:
                self._drop_heads_over_limit()

    def purge(self) -> int:
        count = self.message_count
        self._ready.purge()
        self._dead = self._bytes = 0
        self._ttl_heap.clear()
        if self._dedup is not None:
            self._dedup.clear()
        return count

    def delivery_properties(self, entry: Entry) -> bytes:
        """The properties a delivery carries: the publisher's, plus x-delivery-count on a
        queue with a delivery limit or when the message came back before."""
        if entry.delivery_count or self.settings.delivery_limit is not None:
            return edit_properties(entry.message.properties,
                                   {"x-delivery-count": long_value(entry.delivery_count)})
        return entry.message.properties

    # -- expiry ---------------------------------------------------------------------------

    def _expired(self, entry: Entry, now: int) -> bool:
        # Strictly past its deadline: a TTL of 0 still reaches a consumer waiting right now.
        if entry.expires_ms and entry.expires_ms < now:
            return True
        return self._ttl is not None and entry.timestamp_ms + self._ttl < now

    def _due(self, deadline_ms: int) -> float:
        """A wall-clock deadline on the scheduler's clock."""
        scheduler = self.host.scheduler
        return scheduler.now() + max(0.0, (deadline_ms - now_ms()) / 1000)

    def _arm_ttl_heap(self) -> None:
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
        self._ttl_timer = None
        if self._ttl_heap and not self.deleted:
            self._ttl_timer = self.host.scheduler.call_at(self._due(self._ttl_heap[0][0]),
                                                          self._on_ttl_heap)

    def _on_ttl_heap(self) -> None:
        """Expire every indexed entry whose own TTL has passed, wherever it sits."""
        self._ttl_timer = None
        now = now_ms()
        heap = self._ttl_heap
        while heap and heap[0][0] <= now:
            _, _, entry = heapq.heappop(heap)
            if not entry.delivered and not entry.dead:
                self._expire_in_place(entry)
        self._arm_ttl_heap()

    def _expire_in_place(self, entry: Entry) -> None:
        """An entry still in the store expired: settle it now, skip it when reached."""
        self._ready.settle(entry)
        entry.dead = True
        self._dead += 1
        self._bytes -= len(entry.message.body)
        self._dead_letter(entry.message, EXPIRED)
        if self._dead >= _COMPACT_AT and self._dead * 2 > len(self._ready):
            self._dead -= self._ready.compact()

    def _arm_head_expiry(self) -> None:
        """With a queue TTL, wake up when the head is due (or at once if nothing is ready)."""
        if self._ttl is None or self.deleted:
            return
        head = self._ready.peek()
        while head is not None and head.dead:
            self._ready.pop()
            self._dead -= 1
            head = self._ready.peek()
        if head is None:
            return
        deadline = head.timestamp_ms + self._ttl
        self._head_timer = self.host.scheduler.call_at(self._due(deadline), self._on_head)

    def _rearm_head_expiry(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._arm_head_expiry()

    def _on_head(self) -> None:
        self._head_timer = None
        now = now_ms()
        while (head := self._ready.peek()) is not None and (head.dead
                                                           or self._expired(head, now)):
            self._ready.pop()
            if head.dead:
                self._dead -= 1
                continue
            self._bytes -= len(head.message.body)
            self._die(head, EXPIRED)
        self._arm_head_expiry()

    def recovered(self) -> None:
        """After recovery: index the entries that carry their own TTL, start the clocks."""
        for entry in self._ready.expiring():
            heapq.heappush(self._ttl_heap, (entry.expires_ms, entry.seq, entry))
        if self._ttl_heap:
            self._ttl_active = True
            self._arm_ttl_heap()
        self._arm_head_expiry()

    # -- length limits and dead letters ---------------------------------------------------

    def _drop_heads_over_limit(self) -> None:
        """x-overflow drop-head: the oldest ready messages die until the queue fits."""
        settings = self.settings
        while ((settings.max_length is not None and self.message_count > settings.max_length)
               or (settings.max_length_bytes is not None
                   and self._bytes > settings.max_length_bytes)):
            entry = self._ready.pop()
            if entry is None:
                return
            if entry.dead:
                self._dead -= 1
                continue
            self._bytes -= len(entry.message.body)
            self._die(entry, MAXLEN)

    def _die(self, entry: Entry, reason: str) -> None:
        """An entry taken out of the store dies: settle it, and mark it so that its own TTL,
        if it has one, does not kill it a second time."""
        self._ready.settle(entry)
        entry.dead = True
        self._dead_letter(entry.message, reason)

    def _dead_letter(self, message: Message, reason: str) -> None:
        if self._dedup is not None:
            self._dedup.forget(message)
        if self.settings.dead_letter_exchange is not None:
            self.host.dead_letter(self, message, reason)

    # -- consumers ------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """Attach a consumer; the caller checks `exclusive_use_conflict` first."""
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self._consumers.append(consumer)
        self._had_consumer = True
        if self._expires_timer is not None:
            self._expires_timer.cancel()
            self._expires_timer = None

    def exclusive_use_conflict(self, exclusive: bool) -> bool:
        """True if a new consumer may not attach: an exclusive one exists, or is asked for."""
        return self._exclusive_consumer is not None or (exclusive and bool(self._consumers))

    def remove_consumer(self, consumer: Consumer) -> bool:
        """Detach a consumer; return False if it was not attached."""
        try:
            self._consumers.remove(consumer)
        except ValueError:
            return False
        if self._exclusive_consumer is consumer:
            self._exclusive_consumer = None
        if not self._consumers:
            self.touch()
        return True

    @property
    def active_consumer(self) -> Consumer | None:
        """With x-single-active-consumer, the one consumer that receives messages."""
        return self._consumers[0] if self._consumers else None

    def dispatch(self) -> None:
        """Deliver ready entries to consumers that have room: round-robin, or all to the
        single active consumer."""
        consumers = self._consumers
        if not consumers or self.deleted:
            return
        if self.settings.single_active_consumer:
            active = consumers[0]
            while active.has_capacity():
                entry = self._take()
                if entry is None:
                    return
                self._hand_over(active, entry)
            return
        ready = self._ready
        while ready and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.has_capacity():
                    break
            else:
                return
            entry = self._take()
            if entry is None:
                return
            self._hand_over(consumer, entry)

    def _hand_over(self, consumer: Consumer, entry: Entry) -> None:
        if consumer.no_ack:
            self._ready.settle(entry)
            if self._dedup is not None:
                self._dedup.forget(entry.message)
        else:
            self.unacked_count += 1
            consumer.unacked += 1
        consumer.channel.deliver(consumer, self, entry)

    # -- lifetime -------------------------------------------------------------------------

    def touch(self) -> None:
        """The queue was used (declared, consumed from, read): restart its x-expires clock."""
        expires = self.settings.expires
        if expires is None or self.deleted:
            return
        if self._expires_timer is not None:
            self._expires_timer.cancel()
            self._expires_timer = None
        if not self._consumers:
            self._expires_timer = self.host.scheduler.call_later(expires / 1000, self._unused)

    def _unused(self) -> None:
        self._expires_timer = None
        if not self._consumers and not self.deleted:
            self.host.queue_unused(self)

    def delete(self) -> list[Consumer]:
        """Mark deleted, drop ready entries, and return the consumers to notify."""
        self.deleted = True
        for timer in (self._ttl_timer, self._head_timer, self._expires_timer):
            if timer is not None:
                timer.cancel()
        self._ttl_heap.clear()
        self._ready.delete()
        consumers = list(self._consumers)
        self._consumers.clear()
        self._exclusive_consumer = None
        return consumers
