"""kill -9: in a loop, publishers (with confirms, on several connections) and a consumer that
holds some deliveries unacknowledged work against a `leveret serve` process, which is
SIGKILLed at a random moment and restarted on the same data directory. After each restart:
no confirmed message is missing, and every message held unacknowledged at the crash comes
back flagged redelivered; the durable exchange and binding half of them go through are
there too. Set LEVERET_CRASH_ROUNDS for a longer run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pika.exceptions

from tests.integration.test_cli import free_port, start_server

ROUNDS = int(os.environ.get("LEVERET_CRASH_ROUNDS", "4"))
QUEUE = "crash"
PERSISTENT = pika.BasicProperties(delivery_mode=2)


@dataclass
class Ledger:
    """What the clients know, shared by their threads."""

    confirmed: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def publisher(port: int, ids: range, ledger: Ledger) -> None:
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ch.confirm_delivery()
        for message_id in ids:
            exchange, key = ("crash-x", "jobs.new") if message_id % 2 else ("", QUEUE)
            ch.basic_publish(exchange, key, json.dumps({"id": message_id}).encode(),
                             PERSISTENT)
            with ledger.lock:
                ledger.confirmed.add(message_id)  # basic_publish returned: the broker acked
    except pika.exceptions.AMQPError:
        return  # the broker was killed


def consumer(port: int, ledger: Ledger, rng: random.Random) -> None:
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        for method, _, body in ch.consume(QUEUE, inactivity_timeout=0.2):
            if method is None:
                continue
            message_id = json.loads(body)["id"]
            if rng.random() < 0.5:
                ch.basic_ack(method.delivery_tag)
                with ledger.lock:
                    ledger.acked.add(message_id)
            else:
                with ledger.lock:
                    ledger.held.add(message_id)
    except pika.exceptions.AMQPError:
        return


def recover(port: int) -> dict[int, bool]:
    """Take every message from the queue after a restart: id -> redelivered."""
    found: dict[int, bool] = {}
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)) as conn:
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                return found
            found[json.loads(body)["id"]] = method.redelivered


def serve(data: Path, port: int) -> subprocess.Popen[str]:
    return start_server("--port", str(port), "--data-dir", str(data), "--log-level", "warning")


def test_kill_9_loses_no_confirmed_message(tmp_path: Path) -> None:
    seed = int(os.environ.get("LEVERET_CRASH_SEED", str(time.time_ns())))
    rng = random.Random(seed)
    data, port = tmp_path / "data", free_port()
    server = serve(data, port)
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)) as conn:
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.exchange_declare("crash-x", "topic", durable=True)  # must survive kill -9 too
        ch.queue_bind(QUEUE, "crash-x", "jobs.#")
    next_id = 0
    try:
        for round_number in range(ROUNDS):
            ledger = Ledger()
            threads = [threading.Thread(target=publisher,
                                        args=(port, range(next_id + n * 100_000,
                                                          next_id + (n + 1) * 100_000), ledger))
                       for n in range(3)]
            threads.append(threading.Thread(target=consumer,
                                            args=(port, ledger, random.Random(rng.random()))))
            next_id += 300_000
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.5, 2.0))
            server.send_signal(signal.SIGKILL)
            server.wait()
            for thread in threads:
                thread.join(timeout=30)
            server.communicate()
            server = serve(data, port)
            found = recover(port)
            context = (f"round {round_number}, seed {seed}: {len(ledger.confirmed)} confirmed, "
                       f"{len(ledger.acked)} acked, {len(ledger.held)} held, {len(found)} found")
            assert ledger.confirmed, context
            lost = ledger.confirmed - ledger.acked - found.keys()
            assert not lost, f"{context}; lost {sorted(lost)[:10]}"
            not_back = [i for i in ledger.held if not found.get(i)]
            assert not not_back, f"{context}; held but not redelivered {sorted(not_back)[:10]}"
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(data, free_port())
    try:
        result = subprocess.run([sys.executable, "-m", "leveret", "serve", "--port",
                                 str(free_port()), "--data-dir", str(data)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"leveret: error: data directory {data} is in use by "
                                         "another broker")
    finally:
        server.terminate()
        server.communicate(timeout=30)
