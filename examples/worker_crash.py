"""Worker crash: a job whose worker dies goes back on the queue, and a healthy worker does it.

The supervisor (this script, run without a sub-command) puts N jobs on the durable queue 'jobs'
and starts worker A, a subprocess running `worker_crash.py worker`. Each worker takes one job at
a time (prefetch 1) and acknowledges it only after the job is done. While A is in the middle of
job #k, the supervisor kills it with SIGKILL: no clean-up, no goodbye, just like a machine
losing power. The broker sees A's connection drop, and since A never acknowledged job #k it puts
the job back on the queue. Worker B then receives it again, marked redelivered, and finishes it.

Workers report each finished job on the queue 'results', which the supervisor reads.

    python examples/worker_crash.py                      # starts a Leveret broker in-process
    python examples/worker_crash.py --url amqp://guest:guest@127.0.0.1:5672/%2F

Exit status 0 only when every job was done and the killed job was redelivered to worker B and
completed there.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

JOBS, RESULTS = "jobs", "results"
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


# -- the worker: a subprocess ------------------------------------------------------------

def run_worker(url: str, name: str, job_seconds: float) -> int:
    """Do jobs from the queue until SIGTERM, printing what happens (the supervisor reads it)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()  # a reported result must reach the broker before the ack
    # One unacknowledged job at a time: a worker never sits on jobs it has not started.
    channel.basic_qos(prefetch_count=1)

    def on_job(ch: BlockingChannel, method: Basic.Deliver, _: BasicProperties,
               body: bytes) -> None:
        job = json.loads(body)["job"]
        print(f"worker {name}: started job {job} (redelivered={method.redelivered})", flush=True)
        time.sleep(job_seconds)  # the work itself; a crash in here loses nothing
        result = {"job": job, "worker": name, "redelivered": method.redelivered}
        ch.basic_publish("", RESULTS, json.dumps(result).encode(), PERSISTENT)
        ch.basic_ack(method.delivery_tag)  # only now does the broker forget the job
        print(f"worker {name}: finished job {job}", flush=True)

    stopping = False

    def stop(signum: int, frame: object) -> None:  # SIGTERM: finish the current job, then exit
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    channel.basic_consume(JOBS, on_job)
    print(f"worker {name}: waiting for jobs", flush=True)
    while not stopping:
        connection.process_data_events(time_limit=0.2)
    connection.close()
    return 0


# -- the supervisor ----------------------------------------------------------------------

class Worker:
    """A worker subprocess; a thread echoes its output and hands each line to the supervisor."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "worker", "--url", url, "--name", name],
            stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as output:
            for line in output:
                print("  " + line.rstrip(), flush=True)
                self.lines.put(line.strip())

    def wait_for_line(self, wanted: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(wanted):
                return


def setup_queues(channel: BlockingChannel, jobs: int) -> None:
    for name in (JOBS, RESULTS):
        channel.queue_delete(name)  # start clean, so that reruns don't see old jobs
        channel.queue_declare(name, durable=True)
    channel.confirm_delivery()
    for job in range(1, jobs + 1):
        channel.basic_publish("", JOBS, json.dumps({"job": job}).encode(), PERSISTENT)
    print(f"supervisor: put {jobs} jobs on the queue '{JOBS}'", flush=True)


Results = dict[int, list[dict[str, Any]]]  # job -> every report of it being done


def collect_results(channel: BlockingChannel, jobs: int, timeout: float = 30) -> Results:
    """Read the 'results' queue until every job is reported done (or the time is up)."""
    done: Results = {}
    for method, _, body in channel.consume(RESULTS, inactivity_timeout=timeout):
        if method is None:  # nothing for `timeout` seconds
            break
        result = json.loads(body)
        done.setdefault(result["job"], []).append(result)
        channel.basic_ack(method.delivery_tag)
        if len(done) == jobs:
            break
    channel.cancel()
    return done


def supervise(url: str, jobs: int, crash_at: int) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    setup_queues(channel, jobs)

    workers = [a := Worker(url, "A")]
    try:
        a.wait_for_line(f"worker A: started job {crash_at} ")
        a.process.kill()  # SIGKILL, in the middle of the job
        a.process.wait()
        print(f"supervisor: killed worker A with SIGKILL in the middle of job {crash_at}",
              flush=True)

        workers.append(b := Worker(url, "B"))
        done = collect_results(channel, jobs)
        b.process.terminate()  # SIGTERM: B finishes what it is doing and exits cleanly
        b_status = b.process.wait(timeout=10)
        connection.close()
    finally:
        for worker in workers:  # after an error, leave no worker behind
            if worker.process.poll() is None:
                worker.process.kill()

    print("supervisor: results")
    for job in range(1, jobs + 1):
        by = ", ".join(f"worker {r['worker']}" + (" (redelivered)" if r["redelivered"] else "")
                       for r in done.get(job, []))
        print(f"  job {job}: {'done by ' + by if by else 'NOT DONE'}")
    crashed = done.get(crash_at, [])
    rescued = any(r["worker"] == "B" and r["redelivered"] for r in crashed)
    a_finished_it = any(r["worker"] == "A" for r in crashed)
    ok = len(done) == jobs and rescued and not a_finished_it and b_status == 0
    print(f"OK: all {jobs} jobs done; job {crash_at}, whose worker was killed, was redelivered "
          "to worker B and completed" if ok else "FAILED: see above")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", choices=["supervisor", "worker"], default="supervisor")
    parser.add_argument("--url", help="broker URL (default: start a Leveret broker in-process)")
    parser.add_argument("--jobs", type=int, default=5, help="number of jobs")
    parser.add_argument("--crash-at", type=int, default=2, help="kill worker A during this job")
    parser.add_argument("--job-seconds", type=float, default=0.5, help="how long a job takes")
    parser.add_argument("--name", default="A", help="the worker's name (workers only)")
    args = parser.parse_args(argv)
    if args.role == "worker":
        return run_worker(args.url, args.name, args.job_seconds)
    if not 1 <= args.crash_at <= args.jobs:
        parser.error("--crash-at must be between 1 and --jobs")
    if args.url:
        return 0 if supervise(args.url, args.jobs, args.crash_at) else 1
    # The embedded broker lives here, in the supervisor; the workers are separate processes
    # that connect to it over TCP, so killing one does not touch the broker.
    from leveret import Broker

    with Broker() as broker:
        print(f"embedded Leveret broker listening at {broker.url}")
        return 0 if supervise(broker.url, args.jobs, args.crash_at) else 1


if __name__ == "__main__":
    raise SystemExit(main())
