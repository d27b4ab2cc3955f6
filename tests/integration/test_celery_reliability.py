"""Celery's failure paths on Leveret, with a real worker in a subprocess.

* A task that raises and retries itself with a countdown is delayed by the broker, not by the
  worker: its quorum queue turns on Celery's native delayed delivery, so the retry is published
  into the ``celery_delayed_*`` chain of TTL queues and dead-letter exchanges and reaches the
  worker only when due. The task succeeds on its third attempt.
* A task that fails on every attempt and hands its message back each time (by rejecting it
  with requeue, or by killing its worker) is dead-lettered by the broker once it has been
  returned more than its queue's ``x-delivery-limit`` times, with x-death reason
  ``delivery_limit``.

The application is `tests.integration.celery_reliability_app`; the broker runs in this process
on a thread of its own, and the tests read its state (read-only) to see where a message waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection
from kombu.message import Message

from leveret import Broker
from tests.integration.celery_common import Worker, close_app, closing_workers
from tests.integration.celery_reliability_app import (
    DEAD_LETTER_QUEUE,
    DELIVERY_LIMIT,
    NAME,
    RETRY_COUNTDOWN,
    SUCCEEDS_ON,
    create_app,
    declare_dead_letter_queue,
    read_attempts,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DELAY_QUEUE_PREFIX = "celery_delayed_"


def solo_worker(broker_url: str, log: Path) -> Worker:
    """A solo-pool worker for the reliability app: tasks run in the worker process itself."""
    # Keep the event heartbeat, a timer every second: an idle solo worker's loop otherwise
    # sleeps up to 10 s in poll(), and a SIGTERM, or an ack that a task run from the loop's
    # first drain of the connection scheduled, waits for it to wake (Celery's hub; the same
    # against RabbitMQ 3.10).
    return Worker("tests.integration.celery_reliability_app", broker_url, log,
                  ["--pool=solo", "--heartbeat-interval=1"])


@pytest.fixture
def start_worker(broker: Broker, tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """Start a worker (named after its log file); any still running at teardown is killed."""
    with closing_workers() as started:

        def start(name: str) -> Worker:
            worker = solo_worker(broker.url, tmp_path / f"{name}.log")
            started.append(worker)
            return worker

        yield start


@pytest.fixture
def client(broker: Broker) -> Iterator[Celery]:
    """The sending side: a Celery app of this test's own, so no connection outlives it."""
    app = create_app(broker.url)
    yield app
    close_app(app)


def delayed_messages(broker: Broker) -> int:
    """Messages now waiting in the native delayed delivery chain (read from the broker)."""
    queues = list(broker.vhosts["/"].queues.values())
    return sum(q.message_count for q in queues if q.name.startswith(DELAY_QUEUE_PREFIX))


def time_held(samples: list[tuple[float, int]]) -> float:
    """For how long, of the sampled time, the delay chain held a message."""
    return sum(later - at for (at, count), (later, _) in pairwise(samples) if count)


def test_a_retry_with_a_countdown_waits_in_the_broker_then_succeeds(
    broker: Broker, client: Celery, start_worker: Callable[[str], Worker], tmp_path: Path,
) -> None:
    worker = start_worker("worker")
    worker.wait_ready()
    # The worker's DelayedDelivery bootstep declared the chain: 28 levels of TTL queues.
    queues = broker.vhosts["/"].queues
    assert {f"{DELAY_QUEUE_PREFIX}{level}" for level in range(28)} <= queues.keys()
    assert queues[f"{NAME}.retry"].arguments["x-queue-type"] == "quorum"

    log = tmp_path / "attempts.jsonl"
    result = client.tasks[f"{NAME}.flaky"].delay(str(log))
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 30
    while not result.ready():
        assert time.monotonic() < deadline, worker.output()
        samples.append((time.monotonic(), delayed_messages(broker)))
        time.sleep(0.02)
    assert result.get(timeout=5) == SUCCEEDS_ON

    attempts = read_attempts(log)
    assert [a["retries"] for a in attempts] == list(range(SUCCEEDS_ON))
    gaps = [after["time"] - before["time"] for before, after in pairwise(attempts)]
    assert all(RETRY_COUNTDOWN <= gap < RETRY_COUNTDOWN + 1.5 for gap in gaps), gaps

    # Each retry waited its countdown in the broker, one at a time, in the delay chain (each
    # retry is published as the attempt before it fails, so the two waits are back to back).
    assert max(count for _, count in samples) == 1
    assert time_held(samples) >= (SUCCEEDS_ON - 1) * RETRY_COUNTDOWN - 0.2, samples
    for attempt in attempts[1:]:
        [death] = attempt["x-death"]
        assert (death["queue"], death["reason"]) == (f"{DELAY_QUEUE_PREFIX}1", "expired")
        assert death["exchange"] == f"{DELAY_QUEUE_PREFIX}27"
        # Celery still writes the ETA into the message, but it arrived already due, so the
        # worker ran it at once instead of keeping it unacknowledged until then.
        due = datetime.fromisoformat(attempt["eta"]).timestamp()
        assert 0 <= attempt["time"] - due < 0.5, attempt

    assert worker.terminate() == 0, worker.output()
    out = worker.output()
    assert "ERROR" not in out and "Traceback" not in out, out
    assert out.count(f"Task {NAME}.flaky[{result.id}] retry: Retry in {RETRY_COUNTDOWN}s") == 2
    assert f"Task {NAME}.flaky[{result.id}] succeeded" in out


def get_dead_letter(broker_url: str, timeout: float = 30) -> Message:
    """The first message in the dead-letter queue, taken with basic.get."""
    deadline = time.monotonic() + timeout
    with Connection(broker_url) as connection:
        queue = DEAD_LETTER_QUEUE.bind(connection.default_channel)
        while (message := queue.get(no_ack=True)) is None:
            assert time.monotonic() < deadline, "nothing was dead-lettered"
            time.sleep(0.1)
        assert queue.get(no_ack=True) is None  # and only one
        return message


def run_doomed_task(how: str, client: Celery, start_worker: Callable[[str], Worker],
                    log: Path) -> tuple[str, Worker]:
    """Send `doomed` and let it fail until the broker gives up; the last worker still runs."""
    doomed = client.tasks[f"{NAME}.doomed"]
    worker = start_worker("worker-0")
    worker.wait_ready()
    task_id = doomed.delay(str(log), how).id
    if how == "crash":
        # Each attempt takes its worker down with the message unacknowledged; the broker
        # takes it back when the connection drops, and the next worker gets it.
        for number in range(1, DELIVERY_LIMIT + 2):
            assert worker.wait_exit() == 3, worker.output()
            assert len(read_attempts(log)) == number
            worker = start_worker(f"worker-{number}")
            worker.wait_ready()
    return task_id, worker


@pytest.mark.parametrize("how", ["reject", "crash"])
def test_a_task_that_always_fails_is_dead_lettered_past_its_delivery_limit(
    how: str, broker: Broker, client: Celery, start_worker: Callable[[str], Worker],
    tmp_path: Path,
) -> None:
    declare_dead_letter_queue(broker.url)
    log = tmp_path / "attempts.jsonl"
    task_id, worker = run_doomed_task(how, client, start_worker, log)

    message = get_dead_letter(broker.url)
    headers = message.headers
    assert (headers["id"], headers["task"]) == (task_id, f"{NAME}.doomed")
    [death] = headers["x-death"]
    assert death["reason"] == "delivery_limit"
    assert (death["queue"], death["exchange"], death["count"]) == (f"{NAME}.doomed", NAME, 1)
    assert death["routing-keys"] == ["doomed"]
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert message.delivery_info["routing_key"] == DEAD_LETTER_QUEUE.routing_key

    time.sleep(0.5)  # nothing more reaches the worker
    attempts = read_attempts(log)
    assert len(attempts) == DELIVERY_LIMIT + 1
    # (RabbitMQ 3.10 leaves the header out of a first delivery; Leveret sends 0.)
    assert [a["x-delivery-count"] or 0 for a in attempts] == list(range(DELIVERY_LIMIT + 1))
    pids = {a["pid"] for a in attempts}
    assert len(pids) == (DELIVERY_LIMIT + 1 if how == "crash" else 1)
    doomed_queue = broker.vhosts["/"].queues[f"{NAME}.doomed"]
    assert (doomed_queue.message_count, doomed_queue.unacked_count) == (0, 0)

    assert worker.terminate() == 0, worker.output()
    assert "ERROR" not in worker.output(), worker.output()
