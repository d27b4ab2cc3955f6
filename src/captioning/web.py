"""The Video Service: upload API, status API, captions and media, and the two pages.

`create_app(settings)` builds the FastAPI app; it owns a Database, a Storage and a
JobPublisher and runs the outbox loop while it lives. Uploads stream to a temporary file
(`captioning.upload`), are probed with PyAV, moved to storage under a generated key, recorded,
published, and answered 202 without waiting for any captioning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from captioning import __version__
from captioning.config import Settings
from captioning.db import Database, Video, VideoNotFound
from captioning.pipeline import MediaError, probe
from captioning.publisher import JobPublisher, run_outbox
from captioning.queues import Job
from captioning.ranges import RangeNotSatisfiable, parse_range
from captioning.storage import Storage, StorageError, StoredFileMissing, open_storage
from captioning.upload import UploadError, receive_upload

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska",
               "mov": "video/quicktime", "ogg": "video/ogg", "avi": "video/x-msvideo"}
# Multipart framing around the file: an upload this much over the limit is refused early.
FORM_OVERHEAD = 64 * 1024


class VideoOut(BaseModel):
    id: str
    title: str
    filename: str
    status: str
    error: str | None
    attempts: int
    duration_s: float | None
    cue_count: int | None
    created_at: datetime
    updated_at: datetime
    captions_url: str | None
    media_url: str
    page_url: str


def video_out(video: Video) -> VideoOut:
    base = f"/api/videos/{video.id}"
    return VideoOut(
        id=video.id, title=video.title, filename=video.filename, status=video.status,
        error=video.error, attempts=video.attempts, duration_s=video.duration_s,
        cue_count=video.cue_count, created_at=video.created_at, updated_at=video.updated_at,
        captions_url=f"{base}/captions.vtt" if video.status == "done" else None,
        media_url=f"{base}/media", page_url=f"/videos/{video.id}")


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "title": {"type": "string"}}}}}}}


def create_app(settings: Settings, db: Database | None = None,
               storage: Storage | None = None) -> FastAPI:
    db = db or Database(settings.database_url)
    storage = storage or open_storage(settings.storage_url, settings.s3_endpoint_url)
    publisher = JobPublisher(settings.broker_url, settings.topology, settings.publish_timeout_s)
    templates = Jinja2Templates(directory=HERE / "templates")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.create_schema)
        outbox = asyncio.create_task(run_outbox(db, publisher, settings.republish_interval_s))
        yield
        outbox.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outbox
        await publisher.close()

    app = FastAPI(title="Leveret captioning", version=__version__, lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(StorageError)
    async def storage_failed(_request: Request, err: StorageError) -> JSONResponse:
        log.error("storage error: %s", err)
        missing = isinstance(err, StoredFileMissing)
        return JSONResponse({"detail": str(err)}, status_code=404 if missing else 503)

    async def find(video_id: str) -> Video:
        try:
            return await asyncio.to_thread(db.get_video, video_id)
        except VideoNotFound as err:
            raise HTTPException(404, f"no video {video_id}") from err

    @app.post("/api/videos", status_code=202, response_model=VideoOut,
              openapi_extra=UPLOAD_SCHEMA,
              responses={413: {"description": "too large"}, 415: {"description": "not a video"}})
    async def upload_video(request: Request) -> JSONResponse:
        """Store the uploaded video and queue it for captioning; answers at once."""
        video = await accept_upload(request, settings, db, storage, publisher)
        body = video_out(video).model_dump(mode="json")
        return JSONResponse(body, status_code=202, headers={"Location": body["page_url"]})

    @app.get("/api/videos", response_model=list[VideoOut])
    async def list_videos() -> list[VideoOut]:
        return [video_out(v) for v in await asyncio.to_thread(db.list_videos)]

    @app.get("/api/videos/{video_id}", response_model=VideoOut)
    async def get_video(video_id: str) -> VideoOut:
        return video_out(await find(video_id))

    @app.get("/api/videos/{video_id}/captions.vtt", response_class=Response,
             responses={200: {"content": {"text/vtt": {}}}})
    async def captions(video_id: str) -> Response:
        video = await find(video_id)
        if video.status != "done" or video.captions_vtt is None:
            raise HTTPException(404, f"captions are not ready (status {video.status})")
        return Response(video.captions_vtt, media_type="text/vtt; charset=utf-8")

    @app.get("/api/videos/{video_id}/media", response_class=Response)
    async def media(video_id: str, request: Request) -> Response:
        return await media_response(await find(video_id), request, storage)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        videos = [video_out(v) for v in await asyncio.to_thread(db.list_videos)]
        return templates.TemplateResponse(request, "index.html", {
            "videos": videos, "max_upload_bytes": settings.max_upload_bytes})

    @app.get("/videos/{video_id}", response_class=HTMLResponse, include_in_schema=False)
    async def player(video_id: str, request: Request) -> HTMLResponse:
        video = video_out(await find(video_id))
        return templates.TemplateResponse(request, "video.html", {"video": video})

    return app


async def accept_upload(request: Request, settings: Settings, db: Database, storage: Storage,
                        publisher: JobPublisher) -> Video:
    """Receive, check, store, record and publish one upload (see the module docstring)."""
    started = time.perf_counter()
    declared = request.headers.get("content-length")
    limit = settings.max_upload_bytes
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise HTTPException(413, f"the file is larger than the limit of "
                                 f"{settings.max_upload_bytes} bytes")
    try:
        received = await receive_upload(request.stream(), request.headers.get("content-type", ""),
                                        settings.max_upload_bytes, settings.tmp_dir)
    except UploadError as err:
        raise HTTPException(err.status, str(err)) from err
    try:
        info = await asyncio.to_thread(probe, received.path)
        video_id = uuid.uuid4().hex
        key = f"{video_id}.{info.extension}"
        await asyncio.to_thread(storage.put_file, key, received.path)
    except MediaError as err:
        raise HTTPException(415, str(err)) from err
    finally:
        received.path.unlink(missing_ok=True)
    title = " ".join(received.fields.get("title", "").split())[:200]
    video = await asyncio.to_thread(db.add_video, video_id, title or received.filename or
                                    "untitled", received.filename, key, received.size,
                                    info.duration_s)
    if await publisher.publish(Job(video_id, key)):
        await asyncio.to_thread(db.mark_published, video_id)
        # A worker may already be at it; the answer still describes the upload: queued.
        video = dataclasses.replace(video, published=True)
    log.info("video %s uploaded (%d bytes, %s) and %s in %.0f ms", video_id, received.size,
             info.format_name, "queued" if video.published else "kept for the outbox",
             (time.perf_counter() - started) * 1000)
    return video


async def media_response(video: Video, request: Request, storage: Storage) -> Response:
    """The stored file, whole (200) or one byte range (206), so players can seek."""
    size = await asyncio.to_thread(storage.size, video.storage_key)
    media_type = MEDIA_TYPES.get(video.storage_key.rsplit(".", 1)[-1], "application/octet-stream")
    headers: dict[str, Any] = {"Accept-Ranges": "bytes"}
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable as err:
        return Response(status_code=416, headers={"Content-Range": str(err)})
    if wanted is None:
        headers["Content-Length"] = str(size)
        chunks = storage.iter_range(video.storage_key, 0, size - 1) if size else iter(())
        return StreamingResponse(chunks, media_type=media_type, headers=headers)
    headers.update({"Content-Range": wanted.content_range(size),
                    "Content-Length": str(wanted.length)})
    return StreamingResponse(storage.iter_range(video.storage_key, wanted.start, wanted.end),
                             status_code=206, media_type=media_type, headers=headers)
