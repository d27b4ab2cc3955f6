"""The Captioner in-process (captioning.worker): acks, idempotency, failures, retries.

Jobs go through a real broker: the embedded Leveret, except for retries and dead-lettering by
TTL, which Leveret does not enforce yet (x-message-ttl and x-dead-letter-* are accepted but
not acted on), so those tests run against the RabbitMQ on 127.0.0.1:5672 with a queue prefix
unique to the test, and delete their queues afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pika
import pytest

from captioning.asr import Engine
from captioning.config import Settings
from captioning.db import Database, Video
from captioning.queues import ATTEMPT_HEADER, REASON_HEADER, Job, Topology, declare, publish_job
from captioning.storage import LocalStorage
from captioning.worker import Captioner
from leveret import Broker
from tests.captioning.conftest import Media
from tests.captioning.media import KNOWN_TEXT, vtt_text, word_error_rate


@dataclass
class Rig:
    settings: Settings
    db: Database
    storage: LocalStorage
    topology: Topology

    def add(self, source: Path | None, title: str = "t") -> Job:
        """A stored, recorded video (bypassing the web checks); source None stores nothing."""
        video_id = uuid.uuid4().hex
        key = f"{video_id}.mp4"
        if source is not None:
            copy = self.storage.root.parent / f"{video_id}.tmp"
            shutil.copyfile(source, copy)
            self.storage.put_file(key, copy)
        self.db.add_video(video_id, title, "x.mp4", key, 1, None)
        return Job(video_id, key)

    async def publish(self, *jobs: Job, body: bytes | None = None) -> None:
        connection = await aio_pika.connect(self.settings.broker_url)
        async with connection:
            channel = await connection.channel()
            await declare(channel, self.topology)
            for job in jobs:
                await publish_job(channel, self.topology, job)
            if body is not None:
                await channel.default_exchange.publish(aio_pika.Message(body),
                                                       routing_key=self.topology.jobs)

    async def wait(self, video_id: str, *statuses: str, timeout: float = 60) -> Video:
        return await self.wait_until(video_id, lambda v: v.status in statuses, timeout)

    async def wait_until(self, video_id: str, check: Callable[[Video], bool],
                         timeout: float = 60) -> Video:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            video = await asyncio.to_thread(self.db.get_video, video_id)
            if check(video):
                return video
            await asyncio.sleep(0.02)  # let the Captioner run
        pytest.fail(f"video {video_id} is {self.db.get_video(video_id)} after {timeout} s")

    def drain(self, queue: str) -> list[tuple[Job, dict[str, object]]]:
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.broker_url))
        channel = connection.channel()
        out = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            out.append((Job.decode(body), dict(props.headers or {})))
        connection.close()
        return out


def make_rig(tmp_path: Path, broker_url: str, prefix: str) -> Rig:
    settings = Settings(broker_url=broker_url, database_url=f"sqlite:///{tmp_path}/c.db",
                        storage_url=f"file://{tmp_path}/media", queue_prefix=prefix,
                        retry_delays_s=(0.3, 0.6), tmp_dir=tmp_path, shutdown_grace_s=10)
    db = Database(settings.database_url)
    db.create_schema()
    return Rig(settings, db, LocalStorage(tmp_path / "media"),
               Topology(prefix, settings.retry_delays_s))


@pytest.fixture
def rig(tmp_path: Path, leveret_broker: Broker, prefix: str) -> Rig:
    return make_rig(tmp_path, leveret_broker.url, prefix)


@pytest.fixture(params=["leveret", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def retry_rig(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Rig]:
    """A rig on either broker: retries use TTL queues and dead-lettering, which both have."""
    if request.param == "leveret":
        broker: Broker = request.getfixturevalue("leveret_broker")
        yield make_rig(tmp_path, broker.url, prefix)
        return
    rabbitmq: str = request.getfixturevalue("rabbitmq")
    made = make_rig(tmp_path, rabbitmq, prefix)
    yield made
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    channel = connection.channel()
    for queue in made.topology.all_queues():
        channel.queue_delete(queue)
    connection.close()


@contextlib.asynccontextmanager
async def captioner(rig: Rig, engine: Engine) -> AsyncIterator[Captioner]:
    worker = Captioner(rig.settings, rig.db, rig.storage, engine)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield worker
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30)


async def test_captions_a_job_then_acks_duplicates_without_work(
        rig: Rig, media: Media, whisper: Engine) -> None:
    job = rig.add(media.speech_mp4)
    async with captioner(rig, whisper):
        await rig.publish(job)
        done = await rig.wait(job.video_id, "done")
        assert done.attempts == 1 and done.error is None and done.cue_count
        assert done.captions_vtt is not None
        assert word_error_rate(KNOWN_TEXT, vtt_text(done.captions_vtt)) < 0.3
        await rig.publish(job)  # a redelivery after a crash between commit and ack
        await asyncio.sleep(0.5)
    again = rig.db.get_video(job.video_id)
    assert (again.attempts, again.captions_vtt) == (1, done.captions_vtt)
    assert rig.drain(rig.topology.jobs) == []  # both acked


def test_reprocessing_gives_the_same_captions(rig: Rig, media: Media, whisper: Engine) -> None:
    worker = Captioner(rig.settings, rig.db, rig.storage, whisper)
    job = rig.add(media.short_mp4)
    assert worker.caption(job).vtt == worker.caption(job).vtt


async def test_video_without_audio_fails_at_once_with_the_reason(
        rig: Rig, media: Media, whisper: Engine) -> None:
    job = rig.add(media.no_audio_mp4)
    async with captioner(rig, whisper):
        await rig.publish(job)
        failed = await rig.wait(job.video_id, "failed")
    assert failed.attempts == 1
    assert failed.error == "the video has no audio track, so there is nothing to caption"
    [(dead, headers)] = rig.drain(rig.topology.dead)
    assert dead == job and headers[REASON_HEADER] == failed.error


async def test_bad_message_is_dropped_and_work_goes_on(rig: Rig, media: Media,
                                                       whisper: Engine) -> None:
    job = rig.add(media.short_mp4)
    async with captioner(rig, whisper):
        await rig.publish(body=b"not json")
        await rig.publish(job)
        await rig.wait(job.video_id, "done")
    assert rig.drain(rig.topology.jobs) == []


async def test_unknown_video_job_is_dropped(rig: Rig, whisper: Engine) -> None:
    async with captioner(rig, whisper):
        await rig.publish(Job(uuid.uuid4().hex, f"{uuid.uuid4().hex}.mp4"))
        await asyncio.sleep(0.5)
    assert rig.drain(rig.topology.jobs) == []


async def test_job_that_crashed_workers_too_often_is_dead_lettered(
        rig: Rig, media: Media, whisper: Engine) -> None:
    job = rig.add(media.short_mp4)
    for _ in range(3):  # three workers died mid-job (their attempts were counted)
        rig.db.start_attempt(job.video_id, "gone:1", "whisper")
    async with captioner(rig, whisper):
        await rig.publish(job)
        failed = await rig.wait(job.video_id, "failed")
    assert failed.error == ("gave up after 3 attempts: the worker stopped or crashed during "
                            "each attempt")


async def test_failed_attempts_retry_with_backoff_then_dead_letter(
        retry_rig: Rig, whisper: Engine) -> None:
    job = retry_rig.add(None)  # the stored file is missing: every attempt fails
    started = time.monotonic()
    async with captioner(retry_rig, whisper):
        await retry_rig.publish(job)
        failed = await retry_rig.wait(job.video_id, "failed", timeout=30)
    assert time.monotonic() - started >= 0.3 + 0.6  # two backoff delays, via the TTL queues
    assert failed.attempts == 3
    assert failed.error is not None
    assert failed.error.startswith("failed after 3 attempts: StoredFileMissing: stored file")
    [(dead, headers)] = retry_rig.drain(retry_rig.topology.dead)
    assert dead == job and headers[ATTEMPT_HEADER] == 3
    assert retry_rig.drain(retry_rig.topology.jobs) == []


async def test_a_retry_can_succeed(retry_rig: Rig, media: Media, whisper: Engine) -> None:
    job = retry_rig.add(None)
    async with captioner(retry_rig, whisper):
        await retry_rig.publish(job)
        waiting = await retry_rig.wait_until(job.video_id, lambda v: v.error is not None, 10)
        assert waiting.status == "queued" and waiting.error is not None
        assert waiting.error.startswith("attempt 1 failed: StoredFileMissing")
        assert waiting.error.endswith("retrying in 0.3 s")
        copy = retry_rig.storage.root.parent / "late.tmp"
        shutil.copyfile(media.short_mp4, copy)
        retry_rig.storage.put_file(job.storage_key, copy)  # the file turns up
        done = await retry_rig.wait(job.video_id, "done", timeout=30)
    assert done.attempts == 2 and done.error is None
