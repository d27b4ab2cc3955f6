"""The videos table on SQLite and PostgreSQL (captioning.db): one contract, both engines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from captioning.db import Database, VideoNotFound


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sub' / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    database.create_schema()
    database.create_schema()  # idempotent
    yield database
    database.close()


def add(db: Database, title: str = "A title") -> str:
    video_id = uuid.uuid4().hex
    db.add_video(video_id, title, "a.mp4", f"{video_id}.mp4", 1234, 12.5)
    return video_id


def test_lifecycle(db: Database) -> None:
    video_id = add(db)
    video = db.get_video(video_id)
    assert (video.status, video.published, video.attempts) == ("queued", False, 0)
    assert video.created_at.tzinfo is not None
    assert [v.id for v in db.unpublished()] == [video_id]
    db.mark_published(video_id)
    assert db.unpublished() == []
    video = db.start_attempt(video_id, "host:1", "whisper tiny.en")
    assert (video.status, video.attempts, video.worker) == ("processing", 1, "host:1")
    video = db.retry_later(video_id, "attempt 1 failed: boom")
    assert (video.status, video.error) == ("queued", "attempt 1 failed: boom")
    db.start_attempt(video_id, "host:2", "whisper tiny.en")
    video = db.finish(video_id, "WEBVTT\n", 0, 12.0)
    assert (video.status, video.error, video.captions_vtt, video.attempts) == (
        "done", None, "WEBVTT\n", 2)
    assert video.updated_at >= video.created_at


def test_fail_and_list(db: Database) -> None:
    first, second = add(db, "first"), add(db, "second")
    db.fail(first, "no audio")
    listed = db.list_videos()
    assert [v.id for v in listed] == [second, first]  # newest first
    assert listed[1].error == "no audio"


def test_requeue_unfinished(db: Database) -> None:
    queued, processing, done = add(db), add(db), add(db)
    for video_id in (queued, processing, done):
        db.mark_published(video_id)
    db.start_attempt(processing, "w", "e")
    db.start_attempt(done, "w", "e")
    db.finish(done, "WEBVTT\n", 0, 1.0)
    assert db.requeue_unfinished() == 2
    assert sorted(v.id for v in db.unpublished()) == sorted([queued, processing])


def test_unknown_video(db: Database) -> None:
    assert db.find_video("nope") is None
    with pytest.raises(VideoNotFound, match="no video 'nope'"):
        db.get_video("nope")
    with pytest.raises(VideoNotFound, match="no video"):
        db.fail("nope", "x")
