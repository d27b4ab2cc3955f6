"""Leveret side by side with the RabbitMQ on 127.0.0.1:5672: the same load, the same client,
alternating A B A B over several repetitions.

Scenarios (the issue's):
  A  transient, auto-ack, 100 B bodies, 1 producer / 1 consumer
  B  persistent on a durable queue, confirms with 500 in flight, manual ack, prefetch 500,
     1 KiB, 1/1
  C  as B with 4 producers / 4 consumers
  D  200,000 persistent 1 KiB messages published with no consumer, then drained: broker RSS
     while full, drain rate
  E  latency at a steady 1,000 msg/s for 10 s, transient and persistent: p50, p99, p99.9
and scaling curves (transient, auto-ack): queues 1/10/100, connections 1/10/100, message
size 100 B / 1 KiB / 64 KiB / 1 MiB.

Producers and consumers are separate processes (raw-socket `loadgen`), so the client does not
share one Python interpreter; every run checks each message arrived exactly once. CPU is
measured for the broker process and for the client processes (in cores: CPU seconds over wall
seconds). Results go to a JSON file that `bench/report.py` turns into docs/benchmarks.md.

    .venv/bin/python bench/compare.py --reps 3 --out bench/results/compare.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from storage import free_port, rss

HOST = "127.0.0.1"
TARGETS = os.environ.get("BENCH_TARGETS", "leveret,rabbitmq").split(",")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Target:
    """A broker to measure: a fresh `leveret serve` per run, or the running RabbitMQ."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 5672
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Target:
        if self.name == "rabbitmq":
            self.pid = int(subprocess.check_output(["pgrep", "-o", "beam.smp"]).split()[0])
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="leveret-compare-")
        self.port = free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "leveret", "serve", "--port", str(self.port), "--data-dir",
             self._tmp.name, "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        if "ready" not in self._proc.stdout.readline():
            raise RuntimeError("leveret did not start")
        self.pid = self._proc.pid
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=60)
        if self._tmp is not None:
            self._tmp.cleanup()


def _producer(port: int, queue: str, count: int, start: int, kwargs: dict[str, Any],
              out: mp.Queue[Any]) -> None:
    result = loadgen.publish(HOST, port, queue, count, start=start, **kwargs)
    out.put(("p", result.seconds, result.cpu_seconds, []))


def _consumer(port: int, queue: str, total: int, seen: Any, counts: Any, index: int,
              kwargs: dict[str, Any], out: mp.Queue[Any]) -> None:
    """One of the consumers of ``queue``; they share ``seen`` (exactly-once) and ``counts``
    (to know when the queue's ``total`` has arrived)."""
    tally = loadgen.Tally(seen, 0, total)

    def done() -> bool:
        counts[index] = tally.received
        return sum(counts) >= total

    result = loadgen.consume(HOST, port, queue, total, tally=tally, done=done, **kwargs)
    out.put(("c", result.seconds, result.cpu_seconds, result.latencies_ms))


def run_load(target: Target, *, producers: int = 1, consumers: int = 1, per_producer: int,
             queues: int = 1, durable: bool, publish: dict[str, Any],
             consume: dict[str, Any]) -> dict[str, Any]:
    """``producers`` publish to ``queues`` queues (producer k to queue k mod queues), and
    ``consumers`` read them (likewise); returns rates, CPU and latencies. Every message must
    arrive exactly once."""
    names = [f"bench-{uuid.uuid4().hex[:8]}-{n}" for n in range(queues)]
    for name in names:
        loadgen.declare(HOST, target.port, name, durable=durable)
    out: mp.Queue[Any] = mp.Queue()
    makers = {q: [k for k in range(producers) if k % queues == q] for q in range(queues)}
    takers = {q: [k for k in range(max(consumers, queues)) if k % queues == q]
              for q in range(queues)}
    consumer_procs, producer_procs = [], []
    for q, name in enumerate(names):
        total = len(makers[q]) * per_producer
        seen, counts = mp.RawArray("b", max(total, 1)), mp.RawArray("q", len(takers[q]))
        consumer_procs += [mp.Process(target=_consumer, args=(
            target.port, name, total, seen, counts, i, consume, out))
            for i in range(len(takers[q]))]
        producer_procs += [mp.Process(target=_producer, args=(
            target.port, name, per_producer, i * per_producer, publish, out))
            for i in range(len(makers[q]))]
    for process in consumer_procs:
        process.start()
    time.sleep(0.3)  # consumers are subscribed before the first publish
    broker_cpu = cpu_seconds(target.pid)
    started = time.perf_counter()
    for process in producer_procs:
        process.start()
    results = collect(out, consumer_procs + producer_procs)
    elapsed = time.perf_counter() - started
    broker_cpu = cpu_seconds(target.pid) - broker_cpu
    for process in consumer_procs + producer_procs:
        process.join()
    for name in names:
        loadgen.delete(HOST, target.port, name)
    total = producers * per_producer
    publish_seconds = max(r[1] for r in results if r[0] == "p")
    latencies = sorted(x for r in results for x in r[3])
    return {
        "rate": total / elapsed, "publish_rate": total / publish_seconds,
        "broker_cpu": broker_cpu / elapsed,
        "client_cpu": sum(r[2] for r in results) / elapsed,
        # the busiest load generator process (each is one thread: 1.0 is saturated)
        "client_cpu_max": max(r[2] / r[1] for r in results if r[1] > 0),
        **({"p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)],
            "p999_ms": latencies[int(len(latencies) * 0.999)]} if latencies else {}),
    }


def collect(out: mp.Queue[Any], processes: list[mp.Process], timeout: float = 300
            ) -> list[Any]:
    """One result from each load process; a process that fails, or a run that stalls,
    fails the run (a consumer missing a message would otherwise wait for ever)."""
    results: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(results) < len(processes):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for process in processes:
                    process.kill()
                raise loadgen.LoadError(
                    f"{len(results)} of {len(processes)} load processes finished; "
                    + (f"exit codes {failed}" if failed else f"stalled for {timeout:.0f} s")
                ) from None
    return results


TRANSIENT = {"persistent": False}
PERSISTENT = {"persistent": True, "confirm_window": 500}
AUTO_ACK = {"auto_ack": True}
MANUAL = {"prefetch": 500}


def scenario_a(t: Target) -> dict[str, Any]:
    return run_load(t, per_producer=200_000, durable=False,
                    publish={**TRANSIENT, "size": 100}, consume=AUTO_ACK)


def scenario_b(t: Target) -> dict[str, Any]:
    return run_load(t, per_producer=100_000, durable=True,
                    publish={**PERSISTENT, "size": 1024}, consume=MANUAL)


def scenario_c(t: Target) -> dict[str, Any]:
    return run_load(t, producers=4, consumers=4, per_producer=40_000, durable=True,
                    publish={**PERSISTENT, "size": 1024}, consume=MANUAL)


def scenario_d(t: Target) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:8]}-d"
    loadgen.declare(HOST, t.port, name)
    count = 200_000
    before = rss(t.pid)
    published = loadgen.publish(HOST, t.port, name, count, size=1024, **PERSISTENT)
    full = rss(t.pid)
    drained = loadgen.consume(HOST, t.port, name, count, prefetch=500)
    loadgen.delete(HOST, t.port, name)
    return {"publish_rate": published.rate, "drain_rate": drained.rate,
            "rss_before_mib": before / 2**20, "rss_full_mib": full / 2**20}


def latency(persistent: bool) -> Callable[[Target], dict[str, Any]]:
    def scenario(t: Target) -> dict[str, Any]:
        publish = {**(PERSISTENT if persistent else TRANSIENT), "size": 1024, "rate": 1000}
        consume = {**(MANUAL if persistent else AUTO_ACK), "latency": True}
        return run_load(t, per_producer=10_000, durable=persistent, publish=publish,
                        consume=consume)

    return scenario


def curve(*, queues: int = 1, connections: int = 1, size: int = 100,
          count: int = 100_000) -> Callable[[Target], dict[str, Any]]:
    per_producer = max(1, count // connections)

    def scenario(t: Target) -> dict[str, Any]:
        return run_load(t, producers=connections, consumers=connections,
                        per_producer=per_producer, queues=queues, durable=False,
                        publish={**TRANSIENT, "size": size}, consume=AUTO_ACK)

    return scenario


SCENARIOS: dict[str, Callable[[Target], dict[str, Any]]] = {
    "A": scenario_a, "B": scenario_b, "C": scenario_c, "D": scenario_d,
    "E-transient": latency(False), "E-persistent": latency(True),
}
CURVES: dict[str, Callable[[Target], dict[str, Any]]] = {
    "queues-1": curve(queues=1), "queues-10": curve(queues=10, connections=10),
    "queues-100": curve(queues=100, connections=10),
    "connections-1": curve(connections=1), "connections-10": curve(connections=10),
    "connections-100": curve(connections=100),
    "size-100B": curve(size=100), "size-1KiB": curve(size=1024),
    "size-64KiB": curve(size=65536, count=20_000), "size-1MiB": curve(size=2**20, count=1_000),
}


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import pika  # a well-known client reads the server's properties for us

    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent, check=False).stdout.strip()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu, "cores": str(os.cpu_count()),
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "leveret": f"{importlib.metadata.version('leveret')} ({commit or 'no git'})",
        "uvloop": importlib.metadata.version("uvloop"),
        "pamqp": importlib.metadata.version("pamqp"),
    }
    if "rabbitmq" in TARGETS:
        connection = pika.BlockingConnection(pika.ConnectionParameters(HOST, 5672))
        properties = connection._impl.server_properties
        connection.close()
        info["rabbitmq"] = f"{properties['version']} ({properties['platform']})"
    return info


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="scenario or curve names")
    parser.add_argument("--curve-reps", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = [(name, fn, args.reps) for name, fn in SCENARIOS.items()]
    plan += [(name, fn, args.curve_reps) for name, fn in CURVES.items()]
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, fn, reps in plan:
        for rep in range(reps):
            for target_name in TARGETS:  # A B A B ...
                with Target(target_name) as target:
                    measured = fn(target)
                results.setdefault(name, {}).setdefault(target_name, []).append(measured)
                print(f"{name} rep {rep + 1} {target_name}: "
                      + json.dumps({k: round(v, 2) for k, v in measured.items()}), flush=True)
    summary = {
        name: {target: {key: summarize([run[key] for run in runs]) for key in runs[0]}
               for target, runs in by_target.items()}
        for name, by_target in results.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "reps": args.reps,
                                    "curve_reps": args.curve_reps, "runs": results,
                                    "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
