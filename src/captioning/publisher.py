"""The web service's side of the broker: publish jobs with confirms, and an outbox loop.

An upload is recorded in the database first (`published = false`), then published. If the
broker is down or does not confirm in time, the upload still succeeds (202): the row stays
`queued` and the outbox loop re-publishes it once the broker is back. A job may so be
published twice (a confirm lost in a crash); workers are idempotent, so that is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from captioning.db import Database
from captioning.queues import Job, Topology, declare, publish_job

log = logging.getLogger(__name__)


class JobPublisher:
    """One connection and confirm channel, (re)opened on demand; publishes one at a time."""

    def __init__(self, broker_url: str, topology: Topology, timeout: float = 5.0) -> None:
        self.broker_url = broker_url
        self.topology = topology
        self.timeout = timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._broker_down = False

    async def publish(self, job: Job) -> bool:
        """True once the broker confirmed the job; False (logged once per outage) if not."""
        async with self._lock:
            try:
                channel = await self._open()
                await publish_job(channel, self.topology, job, self.timeout)
            except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as err:
                await self._reset()
                if not self._broker_down:
                    log.error("cannot publish job for video %s to %s: %s; the upload is kept "
                              "and will be re-published when the broker is back",
                              job.video_id, self.topology.jobs, err or type(err).__name__)
                self._broker_down = True
                return False
            if self._broker_down:
                log.info("broker reachable again: publishing queued jobs")
            self._broker_down = False
            return True

    async def _open(self) -> AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self._reset()
        self._connection = await asyncio.wait_for(
            aio_pika.connect(self.broker_url, timeout=self.timeout), self.timeout)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(channel, self.topology)
        self._channel = channel
        return channel

    async def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    async def close(self) -> None:
        async with self._lock:
            await self._reset()


async def run_outbox(db: Database, publisher: JobPublisher, interval_s: float) -> None:
    """Forever: publish the jobs of queued videos the broker has not confirmed yet."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await republish(db, publisher)
        except Exception:
            log.exception("outbox pass failed; trying again in %.0f s", interval_s)


async def republish(db: Database, publisher: JobPublisher) -> int:
    """One outbox pass; returns how many jobs were published."""
    published = 0
    for video in await asyncio.to_thread(db.unpublished):
        if not await publisher.publish(Job(video.id, video.storage_key)):
            break
        await asyncio.to_thread(db.mark_published, video.id)
        published += 1
    if published:
        log.info("outbox: published %d queued job(s)", published)
    return published
