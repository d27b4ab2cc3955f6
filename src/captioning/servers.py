"""Running the pieces as processes: the web server (uvicorn on our own socket) and a worker.

Each prints one readiness line on stdout when it can take work, and stops gracefully on SIGTERM
or Ctrl-C (SIGINT): the web server finishes open requests, a worker finishes or requeues its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Generator

import uvicorn

from captioning.config import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def on_stop_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def serve_web(settings: Settings, stop: asyncio.Event,
                    on_ready: Callable[[str], None]) -> None:
    """Serve the web app until `stop` is set; calls on_ready(url) once it accepts requests."""
    from captioning.web import create_app

    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=10)
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # raises what went wrong at startup
            raise RuntimeError("the web server stopped during startup")
        await asyncio.sleep(0.02)
    on_ready(url)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopping.cancel()
    sock.close()


async def web_main(settings: Settings) -> int:
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    await serve_web(settings, stop, lambda url: print(
        f"captioning web ready: {url} (broker {settings.public_broker_url})", flush=True))
    log.info("web server stopped")
    return 0


async def worker_main(settings: Settings) -> int:
    from captioning.asr import load_engine
    from captioning.db import Database
    from captioning.storage import open_storage
    from captioning.worker import Captioner

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    db = Database(settings.database_url)
    await asyncio.to_thread(db.create_schema)
    storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
    engine = await asyncio.to_thread(
        load_engine, settings.engine, settings.model, settings.device, settings.compute_type,
        settings.cpu_threads, settings.concurrency)
    clean = await Captioner(settings, db, storage, engine).run(stop)
    if not clean:
        # A transcription thread cannot be interrupted; its job is already back on the queue.
        log.info("worker stopped; running jobs requeued")
        logging.shutdown()
        os._exit(0)
    log.info("worker stopped")
    return 0
