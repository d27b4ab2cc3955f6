"""Small helpers for tests that drive the broker with pika."""

from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel


def drain(channel: BlockingChannel, queue: str, *, ack: bool = True) -> list[bytes]:
    """Every body ready in ``queue``, taken with basic.get until the queue is empty."""
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=ack)
        if method is None:
            return bodies
        bodies.append(body)
