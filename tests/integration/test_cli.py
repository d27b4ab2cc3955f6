"""`leveret serve` as a user runs it: a readiness line, clear one-line errors, and a graceful
shutdown on SIGTERM and Ctrl-C that closes clients with 320 CONNECTION_FORCED and exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

LEVERET = [sys.executable, "-m", "leveret"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*LEVERET, "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no ready line; stdout {line!r}, stderr {err!r}")
    return proc


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    proc = start_server("--port", str(port))
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_is_ready_then_stops_gracefully(server: tuple[subprocess.Popen[str], int],
                                              sig: signal.Signals) -> None:
    proc, port = server
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    conn.channel().queue_declare("from-cli")
    proc.send_signal(sig)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match=r"320.*CONNECTION_FORCED"):
        conn.process_data_events(time_limit=5)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_ready_line_says_where(server: tuple[subprocess.Popen[str], int]) -> None:
    proc, _port = server
    proc.terminate()
    proc.communicate(timeout=10)
    # The fixture read the ready line; start another to look at it.
    other = free_port()
    second = start_server("--port", str(other), "--log-level", "warning")
    second.terminate()
    second.communicate(timeout=10)
    assert second.returncode == 0


def test_taken_port_is_one_clear_line(server: tuple[subprocess.Popen[str], int]) -> None:
    _, port = server
    result = subprocess.run([*LEVERET, "serve", "--port", str(port)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"leveret: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


def test_bad_config_file_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'not a number'\n")
    result = subprocess.run([*LEVERET, "serve", "--config", str(config)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("leveret: error: invalid setting")
    assert "Traceback" not in result.stderr


def test_hash_password_prints_a_usable_hash() -> None:
    from leveret.amqp.auth import User

    result = subprocess.run([*LEVERET, "hash-password", "s3cret"], capture_output=True,
                            text=True, timeout=30, check=True)
    user = User("app", result.stdout.strip())
    assert user.check_password(b"s3cret")
    assert not user.check_password(b"wrong")
