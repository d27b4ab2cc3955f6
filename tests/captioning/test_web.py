"""The Video Service in-process (captioning.web): uploads, limits, statuses, media, pages.

The app runs with its lifespan under Starlette's TestClient, against an embedded Leveret on
its own thread, SQLite and a local folder: real parts, no worker (these tests stop at the
queue; the flow tests run workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from fastapi.testclient import TestClient

from captioning.config import Settings
from captioning.db import Database
from captioning.queues import Job
from captioning.storage import LocalStorage
from captioning.web import create_app
from leveret import Broker
from tests.captioning.conftest import Media, free_port

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def settings(tmp_path: Path, leveret_broker: Broker, prefix: str) -> Settings:
    return Settings(broker_url=leveret_broker.url, database_url=f"sqlite:///{tmp_path}/c.db",
                    storage_url=f"file://{tmp_path}/media", queue_prefix=prefix,
                    tmp_dir=tmp_path, max_upload_bytes=5 * 1024**2, publish_timeout_s=2,
                    republish_interval_s=0.2)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def upload(client: TestClient, path: Path, title: str | None = None,
           filename: str | None = None) -> dict[str, object]:
    with path.open("rb") as f:
        answer = client.post("/api/videos", files={"file": (filename or path.name, f)},
                             data={"title": title} if title is not None else {})
    return {**answer.json(), "http": answer.status_code}


def queued_jobs(url: str, queue: str) -> list[Job]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    jobs = []
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        jobs.append(Job.decode(body))
    connection.close()
    return jobs


def stored(settings: Settings) -> list[str]:
    return sorted(p.name for p in Path(settings.storage_url[7:]).iterdir())


def test_upload_is_stored_recorded_queued_and_answered_202(
        client: TestClient, settings: Settings, media: Media) -> None:
    answer = upload(client, media.speech_mp4, title="  My   talk ")
    assert answer["http"] == 202 and answer["status"] == "queued"
    assert answer["title"] == "My talk"
    assert (answer["filename"], answer["attempts"], answer["captions_url"]) == (
        "speech.mp4", 0, None)
    video_id = str(answer["id"])
    assert stored(settings) == [f"{video_id}.mp4"]  # generated key, not the client's name
    assert queued_jobs(settings.broker_url, f"{settings.queue_prefix}.jobs") == [
        Job(video_id, f"{video_id}.mp4")]
    assert client.get(f"/api/videos/{video_id}").json()["status"] == "queued"
    assert [v["id"] for v in client.get("/api/videos").json()] == [video_id]
    assert Database(settings.database_url).get_video(video_id).published


def test_client_file_name_never_becomes_a_key(client: TestClient, settings: Settings,
                                              media: Media) -> None:
    answer = upload(client, media.speech_webm, filename="../../etc/passwd.webm")
    assert answer["http"] == 202 and answer["filename"] == "../../etc/passwd.webm"
    assert stored(settings) == [f"{answer['id']}.webm"]


@pytest.mark.parametrize(("name", "message"), [
    ("text_file", "not a video file that can be read"),
    ("empty_file", "the file is empty"),
    ("no_audio_mp4", "no audio track"),
    ("truncated_mp4", "truncated or damaged"),
])
def test_not_a_video_is_415_and_nothing_is_stored(client: TestClient, settings: Settings,
                                                  media: Media, name: str,
                                                  message: str) -> None:
    answer = upload(client, getattr(media, name))
    assert answer["http"] == 415
    assert message in str(answer["detail"])
    assert stored(settings) == []
    assert client.get("/api/videos").json() == []
    assert list(settings.tmp_dir.glob("upload-*")) == []  # type: ignore[union-attr]


def test_too_large_is_413(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (settings.max_upload_bytes + 1))
    answer = upload(client, big)
    assert answer["http"] == 413 and "larger than the limit" in str(answer["detail"])
    assert stored(settings) == []
    # A client that lies about (or omits) Content-Length is cut off while streaming.
    answer2 = client.post("/api/videos", content=iter([b"x"]), headers={
        "content-type": "multipart/form-data; boundary=b", "content-length": str(10**12)})
    assert answer2.status_code == 413


def test_bad_form_is_400(client: TestClient) -> None:
    answer = client.post("/api/videos", data={"title": "no file"})
    assert answer.status_code == 400 and "file" in answer.json()["detail"]


def test_unknown_video_is_404(client: TestClient) -> None:
    assert client.get("/api/videos/nope").status_code == 404
    assert client.get("/api/videos/nope/captions.vtt").status_code == 404
    assert client.get("/videos/nope").status_code == 404


def test_captions_and_media(client: TestClient, settings: Settings, media: Media) -> None:
    video_id = str(upload(client, media.speech_mp4)["id"])
    answer = client.get(f"/api/videos/{video_id}/captions.vtt")
    assert answer.status_code == 404 and "not ready (status queued)" in answer.json()["detail"]
    Database(settings.database_url).finish(video_id, "WEBVTT\n\n1\n00:00:00.000 --> "
                                                     "00:00:01.000\nHi\n", 1, 20.0)
    answer = client.get(f"/api/videos/{video_id}/captions.vtt")
    assert answer.headers["content-type"].startswith("text/vtt")
    assert "Hi" in answer.text
    assert client.get(f"/api/videos/{video_id}").json()["captions_url"].endswith("captions.vtt")
    data = media.speech_mp4.read_bytes()
    whole = client.get(f"/api/videos/{video_id}/media")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/api/videos/{video_id}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/api/videos/{video_id}/media", headers={"Range": "bytes=-10"})
    assert tail.content == data[-10:]
    bad = client.get(f"/api/videos/{video_id}/media", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"


def test_titles_are_escaped_in_pages(client: TestClient, media: Media) -> None:
    video_id = str(upload(client, media.speech_mp4, title=XSS, filename=XSS + ".mp4")["id"])
    for page in (client.get("/"), client.get(f"/videos/{video_id}")):
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert" in page.text
    player = client.get(f"/videos/{video_id}").text
    assert 'id="cc"' in player and "disabled" in player
    assert client.get("/static/video.js").status_code == 200


def test_player_page_has_the_track_once_captions_exist(client: TestClient, settings: Settings,
                                                       media: Media) -> None:
    video_id = str(upload(client, media.speech_mp4)["id"])
    assert "<track" not in client.get(f"/videos/{video_id}").text
    Database(settings.database_url).finish(video_id, "WEBVTT\n", 0, 20.0)
    page = client.get(f"/videos/{video_id}").text
    assert '<track id="captions" kind="captions"' in page
    assert f'src="/api/videos/{video_id}/captions.vtt"' in page


def test_openapi_schema_is_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/api/videos" in schema["paths"]
    body = schema["paths"]["/api/videos"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


def test_broker_down_upload_is_kept_and_published_later(settings: Settings, media: Media) -> None:
    port = free_port()
    down = dataclasses.replace(settings, broker_url=f"amqp://guest:guest@127.0.0.1:{port}/")
    with TestClient(create_app(down)) as client:
        answer = upload(client, media.speech_mp4)
        assert answer["http"] == 202 and answer["status"] == "queued"
        video_id = str(answer["id"])
        db = Database(settings.database_url)
        assert not db.get_video(video_id).published
        assert LocalStorage(Path(settings.storage_url[7:])).size(f"{video_id}.mp4") > 0
        with Broker(port=port) as broker:
            import time
            deadline = time.monotonic() + 20
            while not db.get_video(video_id).published and time.monotonic() < deadline:
                time.sleep(0.1)
            assert db.get_video(video_id).published
            assert queued_jobs(broker.url, f"{settings.queue_prefix}.jobs") == [
                Job(video_id, f"{video_id}.mp4")]


def test_media_whose_stored_file_vanished_is_404(client: TestClient, settings: Settings,
                                                 media: Media) -> None:
    video_id = str(upload(client, media.short_mp4)["id"])
    LocalStorage(Path(settings.storage_url[7:])).delete(f"{video_id}.mp4")
    answer = client.get(f"/api/videos/{video_id}/media")
    assert answer.status_code == 404 and "is missing" in answer.json()["detail"]
