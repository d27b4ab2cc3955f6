"""Job messages, queue topology and confirmed publishing (captioning.queues)."""

from __future__ import annotations

from collections.abc import Iterator

import aio_pika
import aiormq
import pika
import pytest

from captioning.queues import ATTEMPT_HEADER, BadJob, Job, Topology, declare, publish_job
from leveret import Broker


def test_job_round_trip() -> None:
    job = Job("a" * 32, "b" * 32 + ".mp4")
    assert Job.decode(job.encode()) == job


@pytest.mark.parametrize("body", [b"", b"[]", b'{"video_id": "x"}', b"\xff"])
def test_bad_job_bodies(body: bytes) -> None:
    with pytest.raises(BadJob, match="not a captioning job"):
        Job.decode(body)


def test_topology_names() -> None:
    topology = Topology("cap", (0.5, 30.0))
    assert topology.jobs == "cap.jobs" and topology.dead == "cap.dead"
    assert topology.all_queues() == ["cap.jobs", "cap.dead", "cap.retry.500", "cap.retry.30000"]


async def test_declare_and_publish_on_leveret(leveret_broker: Broker, prefix: str) -> None:
    topology = Topology(prefix, (1.0,))
    connection = await aio_pika.connect(leveret_broker.url)
    async with connection:
        channel = await connection.channel(on_return_raises=True)
        jobs = await declare(channel, topology)
        await declare(channel, topology)  # equivalent arguments: fine twice
        await publish_job(channel, topology, Job("v", "k"))
        message = await jobs.get(timeout=5)
        assert Job.decode(message.body) == Job("v", "k")
        assert message.headers[ATTEMPT_HEADER] == 1
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()
        missing = Topology(prefix + "-undeclared", (1.0,))
        with pytest.raises(aiormq.exceptions.PublishError):  # mandatory: no silent loss
            await publish_job(channel, missing, Job("v", "k"))


@pytest.fixture
def quorum_prefix(rabbitmq: str, prefix: str) -> Iterator[str]:
    yield prefix
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    channel = connection.channel()
    for queue in Topology(prefix, (1.0,)).all_queues():
        channel.queue_delete(queue)
    connection.close()


@pytest.mark.rabbitmq
async def test_quorum_queues_on_rabbitmq(rabbitmq: str, quorum_prefix: str) -> None:
    topology = Topology(quorum_prefix, (1.0,), "quorum")
    connection = await aio_pika.connect(rabbitmq)
    async with connection:
        channel = await connection.channel()
        await declare(channel, topology)
        await publish_job(channel, topology, Job("v", "k"))
        queue = await channel.declare_queue(topology.jobs, passive=True)
        assert queue.declaration_result.message_count == 1
