"""The broker as an object: start it in your own event loop, or on a thread of its own.

    async with Broker(port=0) as broker:      # in an asyncio program or test
        connect(broker.url)

    with Broker(port=0) as broker:            # in synchronous code: runs on its own thread
        pika.BlockingConnection(pika.URLParameters(broker.url))

`leveret serve` is this object plus signal handling. The broker owns the vhosts, users and
message store and the listening socket; each client connection is an `amqp.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from leveret.alarms import ResourceMonitor, physical_memory
from leveret.amqp.auth import Permission, UserDirectory
from leveret.amqp.connection import Connection, ServerContext
from leveret.config import Settings
from leveret.core.timers import Scheduler
from leveret.core.vhost import VHost
from leveret.durability import merge_users, restore, snapshot
from leveret.errors import LeveretError
from leveret.store.base import MessageStore
from leveret.store.disk import DiskEngine
from leveret.store.memory import MemoryMessageStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class ListenError(LeveretError):
    """The broker could not listen on its address (port taken, no permission)."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Broker:
    """An AMQP 0-9-1 broker listening on one TCP address."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            settings = Settings(host=host, port=port,
                                data_dir=Path(data_dir) if data_dir is not None else None)
        self.settings = settings
        self.users = UserDirectory(settings.users)
        self.store: MessageStore = MemoryMessageStore()
        self.scheduler = Scheduler()
        self.vhosts: dict[str, VHost] = {name: self._new_vhost(name)
                                         for name in settings.vhosts}
        self.connections: set[Connection] = set()
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._context: ServerContext | None = None
        self.monitor: ResourceMonitor | None = None

    def __repr__(self) -> str:
        where = f"{self.settings.host}:{self.port}" if self.port is not None else "not started"
        return f"<Broker {where}>"

    @property
    def url(self) -> str:
        """An amqp:// URL for the default vhost, with guest's credentials where guest exists."""
        if self.port is None:
            raise RuntimeError("the broker is not started")
        auth = "guest:guest@" if "guest" in self.users else ""
        return f"amqp://{auth}{self.settings.host}:{self.port}/%2F"

    def url_for(self, vhost: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + quote(vhost, safe="")

    # -- asyncio use ------------------------------------------------------------------

    def _new_vhost(self, name: str) -> VHost:
        return VHost(name, self.store, self.scheduler, self.settings.policies)

    def _open_data_dir(self, data_dir: Path) -> None:
        """Take the data directory and rebuild the durable state found in it."""
        engine = DiskEngine(data_dir)
        try:
            definitions = engine.load_definitions()
            self.users = UserDirectory(merge_users(self.settings.users,
                                                   definitions.get("users", [])))
            names = dict.fromkeys([*self.settings.vhosts, *definitions.get("vhosts", [])])
            self.store = engine
            self.vhosts = {name: self._new_vhost(name) for name in names}
            started = time.monotonic()
            restore(engine, definitions, self.vhosts, self._new_vhost)
            log.info("recovery of %s took %.2f s", data_dir, time.monotonic() - started)
        except BaseException:
            self.store = MemoryMessageStore()
            engine.close()
            raise
        engine.set_definitions_source(lambda: snapshot(self.vhosts, self.users.all()))
        engine.definitions_changed()  # the configured vhosts and users become durable too
        self.store = engine

    async def start(self) -> None:
        """Recover the data directory if there is one, then listen; return once connections
        are accepted."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self.settings.data_dir is not None and not isinstance(self.store, DiskEngine):
            self._open_data_dir(self.settings.data_dir)
        context = self._context = ServerContext(self.settings, self.vhosts, self.users,
                                                self.connections)
        try:
            self._server = await self._loop.create_server(
                lambda: Connection(context), self.settings.host, self.settings.port,
                reuse_address=True, backlog=1024,
            )
        except OSError as err:
            self.store.close()
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            raise ListenError(f"cannot listen on {self.settings.host}:{self.settings.port}: "
                              f"{reason}") from err
        self.port = self._server.sockets[0].getsockname()[1]
        self.monitor = ResourceMonitor(
            self._alarms_changed, data_dir=self.settings.data_dir,
            disk_free_limit=self.settings.disk_free_limit,
            memory_limit=int(physical_memory() * self.settings.memory_high_watermark),
        )
        self.monitor.start()
        log.info("Leveret broker listening on %s:%d", self.settings.host, self.port)

    def _alarms_changed(self, alarms: frozenset[str]) -> None:
        reason = "; ".join(sorted(alarms)) or None
        if self._context is not None:
            self._context.alarm = reason
        for conn in list(self.connections):
            conn.set_blocked(reason)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection with 320 CONNECTION_FORCED, and wait."""
        if self._server is None:
            return
        self._server.close()
        if self.monitor is not None:
            self.monitor.stop()
        connections = list(self.connections)
        for conn in connections:
            conn.force_close("shutdown")
        if connections:
            _, pending = await asyncio.wait([c.closed for c in connections], timeout=timeout)
            for conn in connections:
                if conn.transport is not None and not conn.closed.done():
                    conn.transport.abort()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._server = None
        self.store.close()
        assert self._stopped is not None
        self._stopped.set()
        log.info("Leveret broker stopped")

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- threaded use -----------------------------------------------------------------

    def __enter__(self) -> Broker:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as err:  # hand the failure to the starting thread
                failure.append(err)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_until_complete(self.wait_stopped())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="leveret-broker", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.call(self.stop())
        assert self._thread is not None
        self._thread.join(timeout=10)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the broker's loop from another thread and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- administration ---------------------------------------------------------------

    def add_vhost(self, name: str, *, grant: str | None = "guest") -> VHost:
        """Create a vhost (if new) and give ``grant`` full permissions on it."""
        if self._off_loop():
            vhost: VHost = self.call(_as_coroutine(self.add_vhost, name, grant=grant))
            return vhost
        found = self.vhosts.get(name)
        if found is None:
            found = self.vhosts[name] = self._new_vhost(name)
            self.store.definitions_changed()
        user = self.users.get(grant) if grant else None
        if user is not None and name not in user.permissions:
            permissions = {**user.permissions, name: Permission()}
            self.users.add(dataclasses.replace(user, permissions=permissions))
            self.store.definitions_changed()
        return found

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost: close its connections (320) and drop its queues and exchanges."""
        if self._off_loop():
            self.call(_as_coroutine(self.delete_vhost, name))
            return
        vhost = self.vhosts.pop(name, None)
        if vhost is None:
            return
        for conn in list(self.connections):
            if conn.vhost is vhost:
                conn.force_close(f"vhost '{name}' is deleted")
        for queue in list(vhost.queues.values()):
            vhost.remove_queue(queue)
        self.store.definitions_changed()

    def _off_loop(self) -> bool:
        if self._loop is None or self._thread is None:
            return False
        with contextlib.suppress(RuntimeError):
            return asyncio.get_running_loop() is not self._loop
        return True


async def _as_coroutine(func: Any, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)
