"""Helpers for the queue tests: a recording QueueHost and small message builders.

`RecordingHost` implements `leveret.core.queue.QueueHost`, the protocol through which a queue
reaches its vhost: it records the dead letters and unused-queue reports a queue makes, and
owns a real Scheduler (whose loop timer arms only inside a running event loop).
"""

from __future__ import annotations

from typing import Any

from leveret.core.message import EXPIRATION, HEADERS, PRIORITY, Message, build_properties
from leveret.core.queue import Consumer, Queue
from leveret.core.tables import build_table, encode_value
from leveret.core.timers import Scheduler
from leveret.store.base import QueueStore
from tests.unit.doubles import RecordingChannel

DLX = {"x-dead-letter-exchange": "dlx"}


class RecordingHost:
    """A QueueHost that records what a queue asks of its vhost."""

    def __init__(self) -> None:
        self.scheduler = Scheduler()
        self.dead: list[tuple[bytes, str]] = []
        self.unused: list[str] = []

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        self.dead.append((message.body, reason))

    def queue_unused(self, queue: Queue) -> None:
        self.unused.append(queue.name)


def message(body: str, *, expiration: int | None = None, dedup: object = None,
            priority: int | None = None) -> Message:
    """A message as published: optional expiration (ms), dedup identity, priority."""
    fields = {}
    if dedup is not None:
        fields[HEADERS] = build_table([("x-deduplication-header", encode_value(dedup))])
    if priority is not None:
        fields[PRIORITY] = bytes([priority])
    if expiration is not None:
        fields[EXPIRATION] = bytes([len(str(expiration))]) + str(expiration).encode()
    return Message.from_wire("", "q", build_properties(fields), body.encode())


def make_queue(host: RecordingHost, store: QueueStore | None = None, **arguments: Any
               ) -> Queue:
    return Queue("q", arguments=arguments, host=host, store=store)


def drain(queue: Queue) -> list[bytes]:
    """basic.get until empty, acking each: the bodies in delivery order."""
    out = []
    while (entry := queue.get()) is not None:
        out.append(entry.message.body)
        queue.settle(entry, None)
    return out


def attach(queue: Queue, channel: RecordingChannel, tag: str, **options: Any) -> Consumer:
    consumer = Consumer(tag, queue, channel, **options)
    queue.add_consumer(consumer)
    queue.dispatch()
    return consumer
