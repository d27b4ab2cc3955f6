"""The videos table (SQLAlchemy 2): SQLite by default, PostgreSQL at scale.

`Database` owns the engine and hands out frozen `Video` values, never live ORM rows, so no
caller holds a session. Every state change is one short transaction. Several processes (the
web service and workers) share an SQLite file: WAL mode and a busy timeout make that work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STATUSES = ("queued", "processing", "done", "failed")


class VideoNotFound(LookupError):
    """No video with this id."""


class Base(DeclarativeBase):
    pass


class VideoRow(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    engine: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cue_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    captions_vtt: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Video:
    """A snapshot of one row."""

    id: str
    title: str
    filename: str
    storage_key: str
    size_bytes: int
    status: str
    published: bool
    error: str | None
    attempts: int
    duration_s: float | None
    worker: str | None
    engine: str | None
    cue_count: int | None
    captions_vtt: str | None
    created_at: datetime
    updated_at: datetime


FIELDS = [f.name for f in dataclasses.fields(Video)]


def _snapshot(row: VideoRow) -> Video:
    values = {name: getattr(row, name) for name in FIELDS}
    for stamp in ("created_at", "updated_at"):  # SQLite drops the zone
        if values[stamp].tzinfo is None:
            values[stamp] = values[stamp].replace(tzinfo=UTC)
    return Video(**values)


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for sqlite:/// or postgresql:// URLs (psycopg 3 driver)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return create_engine(url, pool_pre_ping=True, pool_size=5)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Several processes write this file. A deferred transaction that reads, then writes
        # after another process committed fails at once with SQLITE_BUSY (the busy timeout
        # does not apply to that upgrade); taking the write lock up front makes it wait.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            from pathlib import Path
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables; tolerates another process doing it at the same moment."""
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError:
            Base.metadata.create_all(self.engine)  # the other process won; the tables exist

    def requeue_unfinished(self) -> int:
        """Mark queued and processing videos for re-publishing. Only for a broker known to
        have started empty (the embedded in-memory one): their jobs died with the old one."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(VideoRow).where(VideoRow.status.in_(("queued", "processing")))
                .values(status="queued", published=False, updated_at=now()))
            return int(getattr(result, "rowcount", 0) or 0)

    def close(self) -> None:
        self.engine.dispose()

    def add_video(self, video_id: str, title: str, filename: str, storage_key: str,
                  size_bytes: int, duration_s: float | None) -> Video:
        stamp = now()
        row = VideoRow(id=video_id, title=title, filename=filename, storage_key=storage_key,
                       size_bytes=size_bytes, status="queued", published=False, attempts=0,
                       duration_s=duration_s, created_at=stamp, updated_at=stamp)
        with self._sessions.begin() as session:
            session.add(row)
        return _snapshot(row)

    def find_video(self, video_id: str) -> Video | None:
        with self._sessions() as session:
            row = session.get(VideoRow, video_id)
            return None if row is None else _snapshot(row)

    def get_video(self, video_id: str) -> Video:
        video = self.find_video(video_id)
        if video is None:
            raise VideoNotFound(f"no video {video_id!r}")
        return video

    def list_videos(self, limit: int = 100) -> list[Video]:
        query = select(VideoRow).order_by(VideoRow.created_at.desc()).limit(limit)
        with self._sessions() as session:
            return [_snapshot(row) for row in session.scalars(query)]

    def unpublished(self, limit: int = 100) -> list[Video]:
        """Queued videos whose job the broker has not confirmed yet (the outbox)."""
        query = (select(VideoRow).where(VideoRow.published.is_(False))
                 .where(VideoRow.status == "queued").order_by(VideoRow.created_at).limit(limit))
        with self._sessions() as session:
            return [_snapshot(row) for row in session.scalars(query)]

    def mark_published(self, video_id: str) -> Video:
        return self._update(video_id, lambda row: setattr(row, "published", True))

    def start_attempt(self, video_id: str, worker: str, engine: str) -> Video:
        def change(row: VideoRow) -> None:
            row.status, row.worker, row.engine = "processing", worker, engine
            row.attempts += 1
            row.published = True
        return self._update(video_id, change)

    def finish(self, video_id: str, vtt: str, cue_count: int, duration_s: float) -> Video:
        def change(row: VideoRow) -> None:
            row.status, row.error, row.captions_vtt = "done", None, vtt
            row.cue_count, row.duration_s = cue_count, duration_s
        return self._update(video_id, change)

    def retry_later(self, video_id: str, error: str) -> Video:
        def change(row: VideoRow) -> None:
            row.status, row.error = "queued", error
        return self._update(video_id, change)

    def fail(self, video_id: str, reason: str) -> Video:
        def change(row: VideoRow) -> None:
            row.status, row.error = "failed", reason
        return self._update(video_id, change)

    def _update(self, video_id: str, change: Callable[[VideoRow], None]) -> Video:
        with self._sessions.begin() as session:
            row = self._lock(session, video_id)
            change(row)
            row.updated_at = now()
            return _snapshot(row)

    @staticmethod
    def _lock(session: Session, video_id: str) -> VideoRow:
        row = session.scalars(select(VideoRow).where(VideoRow.id == video_id)
                              .with_for_update()).first()
        if row is None:
            raise VideoNotFound(f"no video {video_id!r}")
        return row
