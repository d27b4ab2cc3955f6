"""What the Celery test applications share: their serialisation settings, and closing the
sending side's app so that no connection outlives a test."""

from __future__ import annotations

from typing import Any

from celery import Celery

# JSON only, results back over AMQP (rpc://): nothing but the broker under test is needed.
SETTINGS: dict[str, Any] = {
    "result_backend": "rpc://",
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
}


def close_app(app: Celery) -> None:
    """Stop the result consumer and close every pooled connection, then the app."""
    if app.backend.result_consumer._consumer is not None:
        app.backend.result_consumer.stop()
    app.pool.force_close_all()
    app.close()
