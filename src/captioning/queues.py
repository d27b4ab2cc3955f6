"""The AMQP side of captioning: the job message, the queue topology, publishing with confirms.

Topology (all durable, declared by both the web service and workers, on the default exchange):

    <prefix>.jobs           the work queue the Captioners consume
    <prefix>.retry.<ms>     one per backoff delay: x-message-ttl=<ms>, dead-lettering back into
                            <prefix>.jobs. A failed job is published here and comes back after
                            the delay (the portable RabbitMQ pattern; no delayed-message plugin)
    <prefix>.dead           jobs that used up their attempts, kept for inspection

Messages are persistent and published mandatory with a publisher confirm, so a publish that
returns has reached a queue. Only standard AMQP 0-9-1 and RabbitMQ queue arguments are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

ATTEMPT_HEADER = "x-captioning-attempt"
REASON_HEADER = "x-captioning-reason"


class BadJob(ValueError):
    """A message body that is not a captioning job."""


@dataclass(frozen=True, slots=True)
class Job:
    video_id: str
    storage_key: str

    def encode(self) -> bytes:
        return json.dumps({"video_id": self.video_id, "storage_key": self.storage_key}).encode()

    @classmethod
    def decode(cls, body: bytes) -> Job:
        try:
            data = json.loads(body)
            return cls(str(data["video_id"]), str(data["storage_key"]))
        except (ValueError, KeyError, TypeError) as err:
            raise BadJob(f"not a captioning job: {body[:100]!r}") from err


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    retry_delays_s: tuple[float, ...]
    queue_type: str | None = None  # "quorum" on a RabbitMQ cluster

    @property
    def jobs(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def retry_queue(self, delay_s: float) -> str:
        return f"{self.prefix}.retry.{round(delay_s * 1000)}"

    def all_queues(self) -> list[str]:
        return [self.jobs, self.dead, *(self.retry_queue(d) for d in self.retry_delays_s)]


async def declare(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """Declare every queue; returns the jobs queue."""
    arguments: dict[str, Any] = {}
    if topology.queue_type == "quorum":
        arguments["x-queue-type"] = topology.queue_type
    jobs = await channel.declare_queue(topology.jobs, durable=True, arguments=arguments)
    await channel.declare_queue(topology.dead, durable=True, arguments=arguments)
    for delay in topology.retry_delays_s:
        await channel.declare_queue(topology.retry_queue(delay), durable=True, arguments={
            **arguments,
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": topology.jobs,
        })
    return jobs


async def _publish(channel: AbstractChannel, queue: str, job: Job, headers: dict[str, Any],
                   timeout: float) -> None:
    message = aio_pika.Message(job.encode(), content_type="application/json",
                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                               message_id=job.video_id, headers=headers)
    await channel.default_exchange.publish(message, routing_key=queue, mandatory=True,
                                           timeout=timeout)


async def publish_job(channel: AbstractChannel, topology: Topology, job: Job,
                      timeout: float = 5.0) -> None:
    """A new job, attempt 1. Returns once the broker confirmed it."""
    await _publish(channel, topology.jobs, job, {ATTEMPT_HEADER: 1}, timeout)


async def publish_retry(channel: AbstractChannel, topology: Topology, job: Job, attempt: int,
                        delay_s: float, timeout: float = 5.0) -> None:
    """Send the job back for attempt `attempt` after `delay_s` (via the TTL retry queue)."""
    await _publish(channel, topology.retry_queue(delay_s), job, {ATTEMPT_HEADER: attempt},
                   timeout)


async def publish_dead(channel: AbstractChannel, topology: Topology, job: Job, attempts: int,
                       reason: str, timeout: float = 5.0) -> None:
    await _publish(channel, topology.dead, job,
                   {ATTEMPT_HEADER: attempts, REASON_HEADER: reason[:1000]}, timeout)
