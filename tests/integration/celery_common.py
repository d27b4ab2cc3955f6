"""What the Celery tests share: the apps' serialisation settings, closing the sending side's
app so that no connection outlives a test, and a real ``celery worker`` in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

ROOT = Path(__file__).resolve().parents[2]

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


class Worker:
    """``celery -A <app> worker`` in a subprocess of its own session, its output in ``log``
    (named after it), with ``args`` and ``env`` added to the defaults."""

    def __init__(self, app: str, broker_url: str, log: Path, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")])),
            "CELERY_BROKER_URL": broker_url,
            "PYTHONWARNINGS": "ignore",  # the worker's warnings are not under test here
            **(env or {}),
        }
        command = [sys.executable, "-m", "celery", "-A", app, "worker", "--without-gossip",
                   "--without-mingle", "-l", "info", "-n", f"{log.stem}@%h", *args]
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            # (A worker may be ready and already gone: one that runs a crashing task is.)
            if self.process.poll() is not None and " ready." not in self.output():
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout}s:\n{self.output()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (Celery's warm shutdown) and wait for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker ignored SIGTERM for {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._out.close()


@contextlib.contextmanager
def closing_workers() -> Iterator[list[Worker]]:
    """A list to put started workers in; any still running at the end are killed."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()
