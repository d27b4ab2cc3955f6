"""Unit tests for leveret.core.timers.Scheduler: deadline order, one event-loop timer for the
earliest deadline, cancellation, re-arming for an earlier deadline, and dormancy outside an
event loop.

Times are real but short (tens of milliseconds). Where the number of loop timers matters, the
test runs on `CountingLoop`, an ordinary selector event loop that also keeps the timer handles
it hands out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from leveret.core.timers import Scheduler


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that remembers every timer handle made through call_at."""

    def __init__(self) -> None:
        super().__init__()
        self.handles: list[asyncio.TimerHandle] = []

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.handles.append(handle)
        return handle

    def live_handles(self) -> list[asyncio.TimerHandle]:
        return [h for h in self.handles if not h.cancelled() and h.when() > self.time()]


def run_on_counting_loop(test: Callable[[CountingLoop], Coroutine[Any, Any, None]]) -> None:
    loop = CountingLoop()
    try:
        loop.run_until_complete(test(loop))
    finally:
        loop.close()


def recorder() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    ran: list[str] = []

    def make(name: str) -> Callable[[], None]:
        return lambda: ran.append(name)

    return ran, make


async def test_callbacks_run_in_deadline_order() -> None:
    scheduler = Scheduler()
    ran, make = recorder()
    base = scheduler.now()
    scheduler.call_at(base + 0.03, make("third"))
    scheduler.call_at(base + 0.01, make("first"))
    scheduler.call_at(base + 0.02, make("second-a"))
    scheduler.call_at(base + 0.02, make("second-b"))  # a tie runs in scheduling order
    scheduler.call_later(0.04, make("fourth"))
    await asyncio.sleep(0.1)
    assert ran == ["first", "second-a", "second-b", "third", "fourth"]


def test_many_deadlines_use_one_loop_timer_armed_for_the_earliest() -> None:
    async def scenario(loop: CountingLoop) -> None:
        scheduler = Scheduler()
        ran, make = recorder()
        base = scheduler.now()
        for i in range(50):
            scheduler.call_at(base + 0.02 + (i % 7) / 1000, make(f"t{i}"))
        [handle] = loop.live_handles()
        assert handle.when() == base + 0.02
        await asyncio.sleep(0.1)
        assert sorted(ran) == sorted(f"t{i}" for i in range(50))
        assert loop.live_handles() == []

    run_on_counting_loop(scenario)


def test_an_earlier_deadline_rearms_the_loop_timer() -> None:
    async def scenario(loop: CountingLoop) -> None:
        scheduler = Scheduler()
        ran, make = recorder()
        base = scheduler.now()
        scheduler.call_at(base + 0.5, make("late"))
        scheduler.call_at(base + 0.6, make("later"))  # later than the armed one: no new timer
        [late] = loop.live_handles()
        assert late.when() == base + 0.5
        scheduler.call_at(base + 0.01, make("early"))
        [early] = loop.live_handles()
        assert early.when() == base + 0.01
        assert late.cancelled()
        await asyncio.sleep(0.03)
        assert ran == ["early"]
        [next_one] = loop.live_handles()  # re-armed for the next deadline after firing
        assert next_one.when() == base + 0.5
        scheduler.close()
        assert loop.live_handles() == []

    run_on_counting_loop(scenario)


async def test_cancelled_timers_do_not_run() -> None:
    scheduler = Scheduler()
    ran, make = recorder()
    first = scheduler.call_later(0.01, make("first"))
    scheduler.call_later(0.02, make("second"))
    third = scheduler.call_later(0.02, make("third"))
    first.cancel()
    third.cancel()
    await asyncio.sleep(0.08)
    assert ran == ["second"]
    assert len(scheduler) == 0


async def test_len_counts_live_timers_only() -> None:
    scheduler = Scheduler()
    fired = asyncio.Event()
    assert len(scheduler) == 0
    scheduler.call_later(0.01, fired.set)
    cancelled = scheduler.call_later(0.02, fired.set)
    last = scheduler.call_later(5, fired.set)
    assert len(scheduler) == 3
    cancelled.cancel()
    assert len(scheduler) == 2
    await asyncio.wait_for(fired.wait(), 2)
    assert len(scheduler) == 1  # the first ran, the second was cancelled
    last.cancel()
    assert len(scheduler) == 0


async def test_a_callback_may_schedule_another_timer() -> None:
    scheduler = Scheduler()
    ran: list[str] = []

    def chain() -> None:
        ran.append("one")
        scheduler.call_later(0.01, lambda: ran.append("two"))

    scheduler.call_later(0.01, chain)
    scheduler.call_later(0.05, lambda: ran.append("three"))
    await asyncio.sleep(0.08)
    assert ran == ["one", "two", "three"]


async def test_close_drops_every_timer() -> None:
    scheduler = Scheduler()
    ran, make = recorder()
    scheduler.call_later(0.01, make("never"))
    scheduler.close()
    await asyncio.sleep(0.03)
    assert ran == []
    assert len(scheduler) == 0


def test_timers_scheduled_outside_a_running_loop_stay_dormant() -> None:
    scheduler = Scheduler()
    ran, make = recorder()
    before = scheduler.now()  # a monotonic clock even without a loop
    timer = scheduler.call_later(0, make("dormant"))
    scheduler.call_at(before - 1, make("past"))
    assert timer.when >= before
    assert len(scheduler) == 2
    assert ran == []
    timer.cancel()
    assert len(scheduler) == 1
    scheduler.close()
    assert len(scheduler) == 0


async def test_a_callback_that_raises_does_not_stall_the_other_timers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: an exception from one callback used to leave _fire before re-arming, so
    # every later TTL, delay, x-expires and consumer timeout of the broker waited forever.
    scheduler = Scheduler()
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    scheduler.call_later(0.01, boom)
    scheduler.call_later(0.01, lambda: ran.append("same-batch"))
    scheduler.call_later(0.03, lambda: ran.append("later"))
    with caplog.at_level(logging.ERROR, logger="leveret.core.timers"):
        await asyncio.sleep(0.1)
    assert ran == ["same-batch", "later"]
    assert [r.getMessage() for r in caplog.records] == ["a scheduled callback failed"]
    assert caplog.records[0].exc_info is not None
