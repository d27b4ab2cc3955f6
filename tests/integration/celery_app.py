"""A small Celery application for the Celery integration test; it holds tasks and settings only.

The worker subprocess loads it with ``celery -A tests.integration.celery_app worker`` and takes
everything from its environment:

* ``CELERY_BROKER_URL``: the Leveret broker (Celery itself reads this variable);
* ``LEVERET_CELERY_ACKS_LATE=1``: acknowledge a task after it has run, not before;
* ``LEVERET_CELERY_PREFETCH``: ``worker_prefetch_multiplier`` (Celery's default is 4).

The test process builds its own client with `create_app(broker_url)`, so no cached connection
outlives the broker of one test. Results travel back over AMQP (``rpc://``): no Redis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from celery import Celery

from tests.integration.celery_common import SETTINGS

NAME = "leveret_it"


def create_app(broker_url: str | None = None, environ: Mapping[str, str] = os.environ) -> Celery:
    app = Celery(NAME, broker=broker_url, set_as_current=False)
    app.conf.update(
        **SETTINGS,
        task_acks_late=environ.get("LEVERET_CELERY_ACKS_LATE") == "1",
        worker_prefetch_multiplier=int(environ.get("LEVERET_CELERY_PREFETCH", "4")),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        result_expires=None,
    )

    @app.task(name=f"{NAME}.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=f"{NAME}.nap", shared=False)
    def nap(seconds: float, marker: str | None = None) -> float:
        """Sleep; first write ``marker`` (a path) so a test can see that the task has begun."""
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(seconds)
        return seconds

    return app


app = create_app()
