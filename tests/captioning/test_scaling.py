"""The scaling path: the same processes against RabbitMQ, PostgreSQL and S3 instead of Leveret,
SQLite and a folder. RabbitMQ and PostgreSQL are the servers on this machine; S3 is moto's
server mode on loopback (there is no real S3 server here). Nothing in the code changes, only
the three URLs (and the usual AWS variables).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pika
import pytest

from captioning.queues import Topology
from tests.captioning.conftest import Media, S3Server, SystemFactory
from tests.captioning.media import KNOWN_TEXT, vtt_text, word_error_rate

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]


@pytest.fixture
def queues_deleted(rabbitmq: str, prefix: str) -> Iterator[None]:
    yield
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    channel = connection.channel()
    for queue in Topology(prefix, (0.3, 0.6)).all_queues():
        channel.queue_delete(queue)
    connection.close()


def test_rabbitmq_postgresql_and_s3(rabbitmq: str, postgres_url: str, s3_server: S3Server,
                                    system_factory: SystemFactory, media: Media,
                                    queues_deleted: None) -> None:
    bucket = s3_server.new_bucket()
    system = system_factory(rabbitmq, postgres_url, f"s3://{bucket}/videos", env=s3_server.env)
    url = system.start_web()
    system.start_workers(2)
    ids = []
    for path in (media.speech_mp4, media.speech_webm, media.short_mp4):
        answer = system.upload(path)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    assert system.upload(media.no_audio_mp4).status_code == 415
    videos = [system.wait_for(video_id) for video_id in ids]
    assert [v.status for v in videos] == ["done"] * 3
    for video in videos[:2]:
        assert video.captions_vtt is not None
        assert word_error_rate(KNOWN_TEXT, vtt_text(video.captions_vtt)) < 0.3
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="videos/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(
        f"videos/{v.storage_key}" for v in videos)
    data = media.speech_mp4.read_bytes()
    part = httpx.get(f"{url}/api/videos/{ids[0]}/media", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert httpx.get(f"{url}/api/videos/{ids[0]}/captions.vtt").status_code == 200
