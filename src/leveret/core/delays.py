"""Delayed delivery without a plugin: a message published with the header ``x-delay: <ms>``
to any exchange waits that long, then is routed through that exchange as if published then.

The messages of a vhost wait in a `TimedStore` (on disk when persistent, so delays survive a
restart) indexed by due time; one scheduler timer is armed for the earliest, so a million
delayed messages cost their index and one timer, not a task each. The ``x-delayed-message``
exchange type of the popular plugin is accepted too (see `core.exchanges`); as in the plugin,
the mandatory flag has no effect on a delayed message.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from leveret.core.message import Entry, Message
from leveret.core.timers import Scheduler, Timer
from leveret.store.base import TimedStore

HEADER = b"x-delay"


def delay_of(message: Message) -> int:
    """The message's x-delay in milliseconds, or 0 when it has none (or not a positive int)."""
    if not message.has_header(HEADER):
        return 0
    value = message.headers.get(HEADER.decode())
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


class DelayedMessages:
    """The delayed messages of one vhost."""

    def __init__(self, store: TimedStore, scheduler: Scheduler,
                 route: Callable[[Message], None]) -> None:
        self._store = store
        self._scheduler = scheduler
        self._route = route
        self._seq = store.max_seq()
        self._timer: Timer | None = None
        self._armed_for = 0

    def __len__(self) -> int:
        return len(self._store)

    def add(self, message: Message, delay_ms: int) -> None:
        """Keep ``message`` for ``delay_ms``, then route it through ``message.exchange``."""
        self._seq += 1
        now = int(time.time() * 1000)
        entry = Entry(message, self._seq, timestamp_ms=now)
        entry.expires_ms = now + delay_ms
        self._store.push(entry)
        self.arm()

    def arm(self) -> None:
        """Wake up for the earliest due message (after recovery, or a new earlier one)."""
        due = self._store.next_due()
        if due is None or (self._timer is not None and self._armed_for <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = due
        delay = max(0.0, (due - time.time() * 1000) / 1000)
        self._timer = self._scheduler.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        for entry in self._store.pop_due(int(time.time() * 1000)):
            self._route(entry.message)
            self._store.settle(entry)
        self.arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
