"""Queues: ready messages, consumers, prefetch, round-robin dispatch and requeue.

A queue holds its ready entries in FIFO order and hands them to consumers in turn, each within
its prefetch window. Deliveries that are not yet acknowledged are counted here and tracked by
the channel that holds them (delivery tags are per channel); the channel settles or requeues
them through this API. Requeued entries go back to their original place in the order.

Ready entries live in a `QueueStore` (memory or disk). No sockets here: a consumer reaches its
channel through the small `ConsumerChannel` protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from leveret.core.message import Entry, Message
from leveret.core.tables import FieldTable
from leveret.store.base import QueueStore
from leveret.store.memory import MemoryQueueStore


class ConsumerChannel(Protocol):
    """What a queue needs from the channel a consumer lives on."""

    def can_deliver(self, consumer: Consumer) -> bool:
        """False while the channel cannot take more (flow, a full socket, global prefetch)."""
        ...

    def deliver(self, consumer: Consumer, queue: Queue, entry: Entry) -> None:
        """Send ``entry`` to the consumer; the queue has already counted it as delivered."""
        ...

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The broker cancelled the consumer (its queue was deleted)."""
        ...


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
    ) -> None:
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: FieldTable = dict(arguments or {})
        self.unacked_count = 0
        self.deleted = False
        self._ready: QueueStore = store if store is not None else MemoryQueueStore()
        self._consumers: deque[Consumer] = deque()
        self._exclusive_consumer: Consumer | None = None
        self._had_consumer = False
        self._next_seq = next_seq

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self._ready)} unacked={self.unacked_count}>"

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Messages ready for delivery (not counting unacknowledged ones), as RabbitMQ reports."""
        return len(self._ready)

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

    # -- messages -------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        """Append a message and deliver it at once if a consumer can take it."""
        self._next_seq += 1
        self._ready.push(Entry(message, self._next_seq))
        if self._consumers:
            self.dispatch()

    def get(self) -> Entry | None:
        """Take the head entry for basic.get; the caller settles it (at once when no-ack)."""
        entry = self._ready.pop()
        if entry is not None:
            self.unacked_count += 1
        return entry

    def settle(self, entry: Entry, consumer: Consumer | None) -> None:
        """A delivery is finished with (acked, or rejected without requeue)."""
        self.unacked_count -= 1
        if consumer is not None:
            consumer.unacked -= 1
        if not self.deleted:
            self._ready.settle(entry)

    def requeue(self, deliveries: Iterable[tuple[Entry, Consumer | None]]) -> None:
        """Put unacknowledged entries back in their original order, marked redelivered.

        The caller dispatches afterwards, once for a batch.
        """
        entries = []
        for entry, consumer in deliveries:
            self.unacked_count -= 1
            if consumer is not None:
                consumer.unacked -= 1
            entry.redelivered = True
            entries.append(entry)
        if not self.deleted:
            self._ready.requeue(entries)

    def purge(self) -> int:
        return self._ready.purge()

    # -- consumers ------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """Attach a consumer; the caller checks `exclusive_use_conflict` first."""
        if consumer.exclusive:
            self._exclusive_consumer = consumer
        self._consumers.append(consumer)
        self._had_consumer = True

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
        return True

    def dispatch(self) -> None:
        """Deliver ready entries round-robin to consumers that have room."""
        ready = self._ready
        consumers = self._consumers
        while ready and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.has_capacity():
                    break
            else:
                return
            entry = ready.pop()
            assert entry is not None
            if consumer.no_ack:
                ready.settle(entry)
                consumer.channel.deliver(consumer, self, entry)
            else:
                self.unacked_count += 1
                consumer.unacked += 1
                consumer.channel.deliver(consumer, self, entry)

    def delete(self) -> list[Consumer]:
        """Mark deleted, drop ready entries, and return the consumers to notify."""
        self.deleted = True
        self._ready.delete()
        consumers = list(self._consumers)
        self._consumers.clear()
        self._exclusive_consumer = None
        return consumers

