"""The Captioner: consume jobs, run the pipeline, store captions, commit, then ack.

The worker is the thin loop around the plain pipeline functions; it owns acks and retries:

- prefetch = concurrency (1 by default): a worker holds only what it is working on, so a
  burst waits in the broker, and a SIGKILLed worker's job is redelivered to another one;
- the database row is the source of truth for attempts. A job whose row is `done` is acked
  without work (a redelivery after a crash between commit and ack); a job that already used
  its attempts (failures or crashes) is dead-lettered;
- a failed attempt is recorded, re-published to the TTL retry queue for its backoff delay and
  acked; after the last attempt it goes to the dead-letter queue and the row is `failed` with
  the reason. Media errors (no audio, not decodable) fail at once: retrying cannot help;
- database or broker trouble (not the job's fault) nacks the message back to the queue.
SIGTERM stops consuming, lets the running job finish within the grace period, and otherwise
closes the connection so the broker requeues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from captioning.asr import Engine
from captioning.config import Settings
from captioning.db import Database, Video
from captioning.pipeline import Captions, MediaError, caption_file
from captioning.queues import BadJob, Job, declare, publish_dead, publish_retry
from captioning.storage import Storage, StorageError

log = logging.getLogger(__name__)


class Captioner:
    def __init__(self, settings: Settings, db: Database, storage: Storage, engine: Engine) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.engine = engine
        self.topology = settings.topology
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.in_flight: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> bool:
        """Consume until `stop` is set. True if every started job finished (clean stop)."""
        connection = await aio_pika.connect_robust(self.settings.broker_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.settings.concurrency)
            self._channel = channel
            queue = await declare(channel, self.topology)
            tag = await queue.consume(self._on_message)
            print(f"captioning worker ready: consuming {self.topology.jobs} on "
                  f"{self.settings.public_broker_url} (engine {self.engine.name} "
                  f"{self.engine.model}, concurrency {self.settings.concurrency})", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("stopping: no new jobs; %d running", len(self.in_flight))
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            if self.in_flight:
                _done, pending = await asyncio.wait(set(self.in_flight),
                                                    timeout=self.settings.shutdown_grace_s)
                if pending:
                    log.warning("%d job(s) still running after %.0f s: closing the connection "
                                "so the broker requeues them", len(pending),
                                self.settings.shutdown_grace_s)
                    return False
            return True
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = Job.decode(message.body)
        except BadJob as err:
            log.error("dropping message %s: %s", message.message_id, err)
            await message.reject(requeue=False)
            return
        try:
            await self.process(job)
        except Exception:
            log.exception("video %s: database or broker trouble; requeueing the job",
                          job.video_id)
            await asyncio.sleep(1)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        try:
            await message.ack()
        except Exception as err:  # the connection dropped: the broker redelivers; idempotent
            log.warning("video %s: ack failed (%s); the job will be redelivered", job.video_id,
                        err)

    async def process(self, job: Job) -> None:
        """One delivery of `job`; returns when it may be acked."""
        video = await asyncio.to_thread(self.db.find_video, job.video_id)
        if video is None:
            log.warning("video %s: no such row; dropping its job", job.video_id)
            return
        if video.status in ("done", "failed"):
            log.info("video %s: already %s; acking the duplicate job", job.video_id,
                     video.status)
            return
        if video.attempts >= self.settings.max_attempts:
            why = video.error or "the worker stopped or crashed during each attempt"
            await self.dead_letter(job, video.attempts,
                                   f"gave up after {video.attempts} attempts: {why}")
            return
        video = await asyncio.to_thread(self.db.start_attempt, job.video_id, self.worker_id,
                                        f"{self.engine.name} {self.engine.model}")
        log.info("video %s: attempt %d/%d started (%s)", job.video_id, video.attempts,
                 self.settings.max_attempts, video.title)
        try:
            captions = await asyncio.to_thread(self.caption, job)
        except MediaError as err:
            log.warning("video %s: cannot be captioned: %s", job.video_id, err)
            await self.dead_letter(job, video.attempts, str(err))
            return
        except Exception as err:
            await self.retry_or_dead_letter(job, video, err)
            return
        await asyncio.to_thread(self.db.finish, job.video_id, captions.vtt, captions.cue_count,
                                captions.duration_s)
        rtf = captions.transcribe_s / captions.duration_s if captions.duration_s else 0.0
        log.info("video %s: done: %d cues, %d words from %.1f s of audio (transcribed in "
                 "%.1f s, RTF %.2f)", job.video_id, captions.cue_count, captions.word_count,
                 captions.duration_s, captions.transcribe_s, rtf)

    def caption(self, job: Job) -> Captions:
        """Download and caption (runs on a thread; the event loop keeps heartbeats going)."""
        steps = [0.0]

        def progress(fraction: float) -> None:
            if fraction - steps[0] >= 0.25 or fraction >= 1.0 > steps[0]:
                steps[0] = fraction
                log.info("video %s: transcribed %.0f%%", job.video_id, 100 * fraction)

        with tempfile.TemporaryDirectory(prefix="captioner-", dir=self.settings.tmp_dir) as tmp:
            local = Path(tmp) / job.storage_key
            self.storage.get_file(job.storage_key, local)
            log.info("video %s: downloaded %d bytes; decoding and transcribing", job.video_id,
                     local.stat().st_size)
            return caption_file(local, self.engine, progress)

    async def retry_or_dead_letter(self, job: Job, video: Video, err: Exception) -> None:
        reason = f"{type(err).__name__}: {err}"
        # Storage errors explain themselves; anything else is a bug worth a traceback.
        log.error("video %s: attempt %d failed: %s", job.video_id, video.attempts, reason,
                  exc_info=not isinstance(err, StorageError))
        if video.attempts >= self.settings.max_attempts:
            await self.dead_letter(job, video.attempts,
                                   f"failed after {video.attempts} attempts: {reason}")
            return
        delay = self.settings.retry_delay(video.attempts)
        await asyncio.to_thread(self.db.retry_later, job.video_id,
                                f"attempt {video.attempts} failed: {reason}; retrying in "
                                f"{delay:g} s")
        assert self._channel is not None
        await publish_retry(self._channel, self.topology, job, video.attempts + 1, delay,
                            self.settings.publish_timeout_s)

    async def dead_letter(self, job: Job, attempts: int, reason: str) -> None:
        assert self._channel is not None
        await publish_dead(self._channel, self.topology, job, attempts, reason,
                           self.settings.publish_timeout_s)
        await asyncio.to_thread(self.db.fail, job.video_id, reason)
        log.warning("video %s: failed and dead-lettered to %s: %s", job.video_id,
                    self.topology.dead, reason)
