"""The runnable examples in examples/: each runs as a subprocess, exactly as a reader would run it.

Against the embedded broker (no --url), against a `leveret serve` subprocess, and against the
reference RabbitMQ (the examples must work there unchanged).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ORDER_BURST = [str(EXAMPLES / "order_burst.py"), "--orders", "2000", "--rate", "1000"]
WORKER_CRASH = [str(EXAMPLES / "worker_crash.py"), "--jobs", "5", "--job-seconds", "0.3"]


def run_example(args: list[str], *, timeout: float = 60) -> str:
    """Run an example to completion; fail unless it exits 0. Return its stdout."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def assert_order_burst_output(out: str, orders: int = 2000) -> None:
    assert f"order service: published and confirmed {orders} orders in " in out
    # The order service finished while most emails were still to be sent.
    sent_by_then = re.search(r"\((\d+) emails sent so far;", out)
    assert sent_by_then and int(sent_by_then[1]) < orders, out
    assert f"email sender: sent {orders} emails in " in out
    assert (f"check: {orders} orders, {orders} emails, 0 missing, 0 duplicates, "
            "0 left in the queue") in out
    assert "OK: every order was emailed exactly once" in out
    # The queue absorbed the burst: at some point it held orders waiting for the sender.
    depths = [int(line.rsplit(maxsplit=1)[1]) for line in out.splitlines()
              if "queue depth" in line]
    assert depths and max(depths) > 0, out


def assert_worker_crash_output(out: str) -> None:
    lines = out.splitlines()
    assert "  worker A: started job 2 (redelivered=False)" in lines
    assert "supervisor: killed worker A with SIGKILL in the middle of job 2" in lines
    assert "  worker B: started job 2 (redelivered=True)" in lines
    assert "  worker A: finished job 2" not in lines
    assert "  job 2: done by worker B (redelivered)" in lines
    assert "OK: all 5 jobs done; job 2, whose worker was killed, was redelivered to worker B " \
           "and completed" in lines


@contextlib.contextmanager
def leveret_serve() -> Iterator[str]:
    """`leveret serve` on a free port; yields its URL, then stops it with SIGTERM (exit 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "leveret", "serve", "--port", str(port)]
    # The log goes to a file: a pipe nobody reads could fill up and stall the server.
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True,
    ) as server:
        try:
            assert wait_for_ready(server), "`leveret serve` printed no 'ready' line"
            yield f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
            try:
                status = server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
        log.seek(0)
        assert status == 0, f"leveret serve exited {status} after SIGTERM\n{log.read()}"


def wait_for_ready(server: subprocess.Popen[str], timeout: float = 15) -> bool:
    first_line: list[str] = []
    assert server.stdout is not None
    stdout = server.stdout
    reader = threading.Thread(target=lambda: first_line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return bool(first_line) and "ready" in first_line[0]


@pytest.mark.slow
def test_order_burst_on_the_embedded_broker() -> None:
    assert_order_burst_output(run_example(ORDER_BURST))


@pytest.mark.slow
def test_worker_crash_on_the_embedded_broker() -> None:
    assert_worker_crash_output(run_example(WORKER_CRASH))


@pytest.mark.slow
def test_order_burst_on_leveret_serve() -> None:
    with leveret_serve() as url:
        assert_order_burst_output(run_example([*ORDER_BURST, "--url", url]))


@pytest.mark.slow
def test_worker_crash_on_leveret_serve() -> None:
    with leveret_serve() as url:
        assert_worker_crash_output(run_example([*WORKER_CRASH, "--url", url]))


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_order_burst_on_rabbitmq(rabbitmq_url: str) -> None:
    assert_order_burst_output(run_example([*ORDER_BURST, "--url", rabbitmq_url]))


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_worker_crash_on_rabbitmq(rabbitmq_url: str) -> None:
    assert_worker_crash_output(run_example([*WORKER_CRASH, "--url", rabbitmq_url]))


def test_examples_are_self_contained() -> None:
    """Neither example needs leveret unless it starts the embedded broker."""
    for example in ("order_burst.py", "worker_crash.py"):
        source = (EXAMPLES / example).read_text()
        top = source.split("\ndef main(", 1)[0]
        assert "import leveret" not in top and "from leveret" not in top, example
    assert (EXAMPLES / "README.md").is_file()
