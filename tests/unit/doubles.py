"""Test doubles for the small protocols the core defines (not mocks of the code under test).

`RecordingChannel` implements `leveret.core.queue.ConsumerChannel`: it records what a queue
hands it and can be told to stop accepting deliveries, as a real channel does under flow
control or a full socket.
"""

from __future__ import annotations

from leveret.core.message import Entry
from leveret.core.queue import Consumer, Queue


class RecordingChannel:
    """A ConsumerChannel that keeps every delivery and cancellation in order."""

    def __init__(self) -> None:
        self.accepting = True
        self.deliveries: list[tuple[str, Queue, Entry]] = []
        self.cancelled: list[str] = []

    def can_deliver(self, consumer: Consumer) -> bool:
        return self.accepting

    def deliver(self, consumer: Consumer, queue: Queue, entry: Entry) -> None:
        self.deliveries.append((consumer.tag, queue, entry))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.cancelled.append(consumer.tag)

    def bodies(self, tag: str | None = None) -> list[bytes]:
        """Bodies delivered (to ``tag`` only, when given), in delivery order."""
        return [e.message.body for t, _, e in self.deliveries if tag is None or t == tag]

    def tags(self) -> list[str]:
        """Consumer tags in delivery order."""
        return [t for t, _, _ in self.deliveries]
