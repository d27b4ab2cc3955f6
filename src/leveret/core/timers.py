"""One scheduler for every broker timer: message TTL, delayed delivery, queue expiry, consumer
timeouts. A heap of deadlines and a single event-loop timer for the earliest, never a task or
a loop callback per message.

Owners of many deadlines (a queue with a million expiring messages, the delayed messages of a
vhost) keep their own index and register only their *earliest* deadline here, so the heap
holds one entry per owner, not per message.

Deadlines are on the event loop's monotonic clock (`loop.time()`, seconds).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Timer:
    """A scheduled call; `cancel()` makes it a no-op (removed lazily from the heap)."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Runs callbacks at their deadlines, in deadline order, from one loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # outside an event loop (a unit test): timers stay dormant
                return None
        return self._loop

    def now(self) -> float:
        loop = self._running_loop()
        return loop.time() if loop is not None else time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if when < self._armed_for:
            self._arm(when)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.now() + delay, callback)

    def __len__(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def _arm(self, when: float) -> None:
        loop = self._running_loop()
        if loop is None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = when
        self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = float("inf")
        now = self.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True
                try:
                    timer.callback()
                except Exception:  # a bug in one owner must not stop every other timer
                    log.exception("a scheduled callback failed")
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
