"""A Celery application for the reliability test: tasks that fail, retry and die; settings only.

Its task queues are quorum queues on a topic exchange, which is what turns on Celery's native
delayed delivery (Celery 5.5+): the worker declares the ``celery_delayed_0..27`` chain of TTL
queues and dead-letter exchanges at start, and a task sent with a countdown (``retry`` included)
is published into that chain instead of to the worker, so the broker holds it until it is due.

* ``leveret_rel.flaky`` (queue ``leveret_rel.retry``) raises until its third attempt and retries
  itself with a countdown;
* ``leveret_rel.doomed`` (queue ``leveret_rel.doomed``, ``x-delivery-limit: 2``) fails on every
  attempt and hands its message back to the broker each time (it rejects it with requeue, or
  kills its worker), so that the broker dead-letters it, past the limit, to ``leveret_rel.dead``
  through the ``leveret_rel.dlx`` exchange.

Each attempt appends a line to a log file the test names, so the test can count attempts and
time them. The worker subprocess takes its broker from ``CELERY_BROKER_URL``; the test process
builds its own client with `create_app(broker_url)`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from kombu import Connection, Exchange, Queue

from tests.integration.celery_common import SETTINGS

NAME = "leveret_rel"
EXCHANGE = Exchange(NAME, type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange(f"{NAME}.dlx", type="direct", durable=True)
DEAD_LETTER_QUEUE = Queue(f"{NAME}.dead", DEAD_LETTER_EXCHANGE, routing_key="dead",
                          durable=True)
DELIVERY_LIMIT = 2
RETRY_COUNTDOWN = 2  # seconds; native delayed delivery counts in whole seconds
SUCCEEDS_ON = 3  # the attempt on which `flaky` succeeds


def task_queues() -> list[Queue]:
    quorum = {"x-queue-type": "quorum"}
    return [
        Queue(f"{NAME}.retry", EXCHANGE, routing_key="retry", durable=True,
              queue_arguments=quorum),
        Queue(f"{NAME}.doomed", EXCHANGE, routing_key="doomed", durable=True,
              queue_arguments={**quorum, "x-delivery-limit": DELIVERY_LIMIT,
                               "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
                               "x-dead-letter-routing-key": DEAD_LETTER_QUEUE.routing_key}),
    ]


def declare_dead_letter_queue(broker_url: str) -> None:
    """The dead-letter exchange and queue; no worker consumes from them."""
    with Connection(broker_url) as connection:
        DEAD_LETTER_QUEUE.bind(connection.default_channel).declare()


def record_attempt(log: str, task: Task) -> int:
    """Append this attempt to ``log`` as a JSON line; return its number (1 for the first).

    A line holds the pid, the wall-clock time, Celery's retry count and ETA, and the headers
    the broker added: ``x-death`` (the delay queues a message came through) and
    ``x-delivery-count``.
    """
    headers = task.request.headers or {}
    record = {"pid": os.getpid(), "time": time.time(), "retries": task.request.retries,
              "eta": task.request.eta, "x-death": headers.get("x-death"),
              "x-delivery-count": headers.get("x-delivery-count")}
    with Path(log).open("a") as out:
        out.write(json.dumps(record, default=str) + "\n")
    return len(read_attempts(log))


def read_attempts(log: str | Path) -> list[dict[str, Any]]:
    path = Path(log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def create_app(broker_url: str | None = None) -> Celery:
    app = Celery(NAME, broker=broker_url, set_as_current=False)
    app.conf.update(
        **SETTINGS,
        task_queues=task_queues(),
        task_default_queue=f"{NAME}.retry",
        task_default_exchange=NAME,
        task_default_exchange_type="topic",
        task_default_routing_key="retry",
        task_routes={f"{NAME}.doomed": {"queue": f"{NAME}.doomed"}},
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        result_expires=None,
    )

    @app.task(name=f"{NAME}.flaky", bind=True, shared=False, max_retries=SUCCEEDS_ON)
    def flaky(self: Task, log: str) -> int:
        attempt = record_attempt(log, self)
        if attempt < SUCCEEDS_ON:
            raise self.retry(exc=RuntimeError(f"attempt {attempt} failed"),
                             countdown=RETRY_COUNTDOWN)
        return attempt

    @app.task(name=f"{NAME}.doomed", bind=True, shared=False, acks_late=True)
    def doomed(self: Task, log: str, how: str) -> None:
        """Fail in a way that hands the message back to the broker, which counts deliveries.

        ``reject``: raise Celery's `Reject` with ``requeue=True`` (basic.reject, requeue);
        ``crash``: end the worker process itself, so its connection drops with the message
        unacknowledged (run it on a solo pool, where the task runs in the worker process).
        """
        attempt = record_attempt(log, self)
        if how == "crash":
            os._exit(3)
        raise Reject(RuntimeError(f"attempt {attempt} failed"), requeue=True)

    return app


app = create_app()
