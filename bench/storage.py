"""Durable storage benchmark: a backlog of persistent messages in one durable queue.

Publishes N persistent 1 KiB messages with publisher confirms (500 in flight) into a durable
queue of a `leveret serve --data-dir` process, sampling the broker's resident memory; kills it
with SIGKILL and times the restart (recovery); then drains the queue with a consumer (prefetch
500, manual acks), sampling memory again and checking every message arrives exactly once.

    .venv/bin/python bench/storage.py --messages 2000000 [--runs 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples a process's RSS every 100 ms; `.peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def finish(self) -> int:
        self.stop.set()
        self.join()
        return self.peak


def serve(data: Path, port: int) -> tuple[subprocess.Popen[str], float]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "leveret", "serve", "--port", str(port),
                             "--data-dir", str(data), "--log-level", "warning"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        raise RuntimeError(f"the broker did not start: {line!r}")
    return proc, time.perf_counter() - started


def run_once(messages: int, size: int, workdir: Path) -> dict[str, float]:
    data, port = workdir / "data", free_port()
    shutil.rmtree(data, ignore_errors=True)
    proc, _ = serve(data, port)
    baseline = rss(proc.pid)
    loadgen.declare("127.0.0.1", port, "backlog")
    sampler = Sampler(proc.pid)
    sampler.start()
    published = loadgen.publish("127.0.0.1", port, "backlog", messages, size=size,
                                persistent=True, confirm_window=500)
    publish_peak = sampler.finish()
    disk = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc, recovery = serve(data, port)
    after_recovery = rss(proc.pid)
    sampler = Sampler(proc.pid)
    sampler.start()
    drained = loadgen.consume("127.0.0.1", port, "backlog", messages, prefetch=500)
    drain_peak = sampler.finish()
    left = sum(f.stat().st_size for f in data.rglob("*.seg"))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return {
        "messages": messages, "size": size,
        "publish_rate": published.rate, "drain_rate": drained.rate,
        "rss_baseline_mib": baseline / 2**20, "rss_publish_peak_mib": publish_peak / 2**20,
        "rss_after_recovery_mib": after_recovery / 2**20,
        "rss_drain_peak_mib": drain_peak / 2**20,
        "disk_full_mib": disk / 2**20, "disk_after_drain_mib": left / 2**20,
        "recovery_seconds": recovery,
        "recovery_seconds_per_million": recovery / (messages / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="leveret-bench-") as tmp:
        for run in range(args.runs):
            result = run_once(args.messages, args.size, Path(tmp))
            print(f"run {run + 1}: " + json.dumps({k: round(v, 2) for k, v in result.items()}),
                  flush=True)
            results.append(result)
    summary = {key: {"median": statistics.median(r[key] for r in results),
                     "min": min(r[key] for r in results), "max": max(r[key] for r in results)}
               for key in results[0]}
    if args.out:
        args.out.write_text(json.dumps({"runs": results, "summary": summary,
                                        "cpu_count": os.cpu_count()}, indent=1))
    print(json.dumps({k: round(v["median"], 2) for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
