"""`captioning up`: the whole system on one machine with embedded defaults.

An embedded Leveret broker on a free loopback port (5672 may be RabbitMQ's), SQLite and a
media folder under --data-dir, N worker processes and the web server. It announces itself
once everything is ready; Ctrl-C or SIGTERM stops the web server, then the workers (each
finishes or requeues its job), then the broker. This is the only module that imports leveret.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

from captioning.config import Settings
from captioning.db import Database
from captioning.servers import on_stop_signals, serve_web

log = logging.getLogger(__name__)
READY = "captioning worker ready"
FORWARDERS: set[asyncio.Task[None]] = set()


async def _forward(name: str, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
    """Copy a worker's stdout to ours with a prefix; note its readiness line."""
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith(READY):
            ready.set()
        print(f"[{name}] {line}", flush=True)


async def start_workers(settings: Settings, count: int,
                        stop: asyncio.Event) -> list[asyncio.subprocess.Process]:
    env = {**os.environ, "BROKER_URL": settings.broker_url,
           "DATABASE_URL": settings.database_url, "STORAGE_URL": settings.storage_url,
           "CAPTIONING_ENGINE": settings.engine, "CAPTIONING_MODEL": settings.model,
           "CAPTIONING_QUEUE_PREFIX": settings.queue_prefix,
           "CAPTIONING_QUEUE_TYPE": settings.queue_type or "",
           "CAPTIONING_RETRY_DELAYS": ",".join(str(d) for d in settings.retry_delays_s)}
    procs: list[asyncio.subprocess.Process] = []
    readies: list[asyncio.Event] = []
    for number in range(1, count + 1):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "captioning", "worker", env=env,
            stdout=asyncio.subprocess.PIPE)
        ready = asyncio.Event()
        forwarder = asyncio.create_task(_forward(f"worker {number}", proc, ready))
        FORWARDERS.add(forwarder)  # the loop keeps only weak references to tasks
        forwarder.add_done_callback(FORWARDERS.discard)
        procs.append(proc)
        readies.append(ready)
    for number, (proc, ready) in enumerate(zip(procs, readies, strict=True), start=1):
        waits: set[asyncio.Task[object]] = {
            asyncio.create_task(ready.wait()), asyncio.create_task(proc.wait()),
            asyncio.create_task(stop.wait())}
        await asyncio.wait(waits, timeout=300, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        if stop.is_set():
            break
        if not ready.is_set():
            await stop_workers(procs, 5)
            raise RuntimeError(f"worker {number} did not start (exit code {proc.returncode})")
    return procs


async def stop_workers(procs: list[asyncio.subprocess.Process], grace_s: float) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), grace_s + 5)
        except TimeoutError:
            log.warning("worker %d did not stop in time; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def up_main(settings: Settings, workers: int, broker_port: int,
                  broker_data: Path | None = None) -> int:
    from leveret import Broker

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    db = Database(settings.database_url)
    await asyncio.to_thread(db.create_schema)
    async with Broker("127.0.0.1", broker_port, data_dir=broker_data) as broker:
        settings = dataclasses.replace(settings, broker_url=broker.url)
        # The embedded broker keeps its queues in the data directory, so jobs survive a
        # restart; videos left unfinished are published again anyway (a job whose message was
        # lost, say to a broker run without a data directory), and workers skip done ones.
        requeued = await asyncio.to_thread(db.requeue_unfinished)
        if requeued:
            log.info("re-queueing %d unfinished video(s) from the last run", requeued)
        procs = await start_workers(settings, workers, stop)
        try:
            await serve_web(settings, stop, lambda url: print(
                f"captioning up: ready at {url} (broker {broker.url}, {workers} worker(s), "
                f"database {settings.database_url}, storage {settings.storage_url}); "
                "Ctrl-C stops", flush=True))
        finally:
            await stop_workers(procs, settings.shutdown_grace_s)
    db.close()
    print("captioning up: stopped", flush=True)
    return 0
