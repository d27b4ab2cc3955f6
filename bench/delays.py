"""Delayed delivery benchmark: how late delays fire under load, and what a backlog of delayed
messages costs in memory.

1. Lateness: 2,000 delayed messages (due in 0.5-5 s, the delay in each body) are published
   while a second publisher and consumer move transient messages through another queue as fast
   as they can; a consumer records how late each delayed message arrives.
2. Backlog: N persistent messages delayed by an hour; the broker's RSS before and after, and
   the restart time with them on disk.

    .venv/bin/python bench/delays.py [--backlog 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from pamqp import commands, frame
from pamqp.header import ContentHeader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from storage import free_port, rss, serve

_HEAD = struct.Struct(">BHI")


def delayed_frames(queue: str, delay_ms: int, body: bytes, persistent: bool) -> bytes:
    props = commands.Basic.Properties(headers={"x-delay": delay_ms},
                                      delivery_mode=2 if persistent else 1)
    return (frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
            + frame.marshal(ContentHeader(0, len(body), props), 1)
            + _HEAD.pack(3, 1, len(body)) + body + b"\xce")


def background_load(port: int, stop: threading.Event, counter: list[int]) -> None:
    """Transient traffic through queue 'noise' as fast as one publisher can push it."""
    loadgen.declare("127.0.0.1", port, "noise", durable=False)
    publisher = loadgen.Client("127.0.0.1", port)
    consumer = loadgen.Client("127.0.0.1", port)
    consumer.call(commands.Basic.Consume(queue="noise", no_ack=True), commands.Basic.ConsumeOk)
    message = loadgen.Message("noise", 100, persistent=False)
    batch = b"".join(b"".join(message.frames(n)) for n in range(200))

    def drain() -> None:
        try:
            while not stop.is_set():
                counter[0] += sum(1 for kind, _ in consumer.frames() if kind == 3)
        except (loadgen.LoadError, OSError):
            return  # the broker went away at the end of the run

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while not stop.is_set():
        publisher.sock.sendall(batch)
        time.sleep(0.005)
    publisher.close()


def lateness(port: int, count: int = 2000) -> dict[str, float]:
    loadgen.declare("127.0.0.1", port, "due", durable=False)
    stop, moved = threading.Event(), [0]
    load = threading.Thread(target=background_load, args=(port, stop, moved), daemon=True)
    load.start()
    time.sleep(1)
    client = loadgen.Client("127.0.0.1", port)
    parts = []
    for _ in range(count):
        delay = random.randint(500, 5000)
        parts.append(delayed_frames("due", delay, struct.pack(">d", delay), persistent=False))
    started = time.time()
    client.sock.sendall(b"".join(parts))
    consumer = loadgen.Client("127.0.0.1", port)
    consumer.call(commands.Basic.Consume(queue="due", no_ack=True), commands.Basic.ConsumeOk)
    late: list[float] = []
    while len(late) < count:
        for kind, payload in consumer.frames():
            if kind == 3:
                due = started * 1000 + struct.unpack(">d", payload)[0]
                late.append(time.time() * 1000 - due)
    stop.set()
    elapsed = time.time() - started
    late.sort()
    return {"delayed": count, "lateness_p50_ms": statistics.median(late),
            "lateness_p99_ms": late[int(len(late) * 0.99)], "lateness_max_ms": late[-1],
            "background_msgs_per_s": moved[0] / elapsed}


def backlog(port: int, count: int, proc_pid: int) -> dict[str, float]:
    before = rss(proc_pid)
    client = loadgen.Client("127.0.0.1", port)
    client.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
    body = bytes(100)
    sent = confirmed = 0
    started = time.perf_counter()
    while sent < count:
        n = min(500, count - sent)
        client.sock.sendall(b"".join(delayed_frames("later", 3_600_000 + i, body, True)
                                     for i in range(n)))
        sent += n
        while confirmed < sent - 1000 or (sent == count and confirmed < count):
            confirmed = loadgen._read_confirms(client, confirmed)
    rate = count / (time.perf_counter() - started)
    time.sleep(1)
    return {"backlog": count, "backlog_publish_rate": rate,
            "rss_before_mib": before / 2**20, "rss_with_backlog_mib": rss(proc_pid) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leveret-delays-") as tmp:
        data, port = Path(tmp) / "data", free_port()
        proc, _ = serve(data, port)
        result = lateness(port)
        loadgen.declare("127.0.0.1", port, "later")
        result |= backlog(port, args.backlog, proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, restart = serve(data, port)
        result |= {"restart_with_backlog_s": restart,
                   "rss_after_restart_mib": rss(proc.pid) / 2**20}
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(json.dumps({k: round(v, 2) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
