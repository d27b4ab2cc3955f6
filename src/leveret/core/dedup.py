"""Message deduplication for queues declared with ``x-message-deduplication: true``.

The names are those of the community plugin (rabbitmq-message-deduplication): a message's
``x-deduplication-header`` value is its identity; ``x-cache-ttl`` (ms) is how long an identity
is remembered, and ``x-cache-size`` how many are. Without ``x-cache-ttl``, an identity is
remembered while a message carrying it is in the queue. A duplicate is dropped on arrival (the
publisher's confirm is still an ack: the broker has handled it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable

from leveret.core.message import Message

HEADER = b"x-deduplication-header"
DEFAULT_SIZE = 100_000


def identity(message: Message) -> Hashable | None:
    """The message's deduplication identity, or None if it has none."""
    if not message.has_header(HEADER):
        return None
    value = message.headers.get(HEADER.decode())
    if value is None:
        return None
    return (type(value).__name__, value) if isinstance(value, Hashable) else repr(value)


class DedupCache:
    """Identities seen recently (with a TTL) or held by messages in the queue (without)."""

    def __init__(self, ttl_ms: int | None, size: int | None) -> None:
        self.ttl = ttl_ms / 1000 if ttl_ms is not None else None
        self.size = size or DEFAULT_SIZE
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(self, message: Message) -> bool:
        """True if ``message`` repeats an identity remembered and not expired."""
        key = identity(message)
        if key is None:
            return False
        expiry = self._seen.get(key)
        return expiry is not None and expiry > time.monotonic()

    def remember(self, message: Message) -> None:
        """``message`` was enqueued: its identity is taken (for the TTL, or while it stays)."""
        key = identity(message)
        if key is None:
            return
        now = time.monotonic()
        self._seen[key] = now + self.ttl if self.ttl is not None else float("inf")
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def forget(self, message: Message) -> None:
        """A message left the queue: without a TTL, its identity may come again."""
        if self.ttl is None:
            key = identity(message)
            if key is not None:
                self._seen.pop(key, None)

    def clear(self) -> None:
        if self.ttl is None:
            self._seen.clear()
