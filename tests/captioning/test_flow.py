"""The captioning flow end to end with real processes: `captioning web` and `captioning
worker` subprocesses on the embedded Leveret broker, SQLite and a local folder.

Upload -> 202 at once -> captions that match the spoken text -> page with the track; a worker
SIGKILLed mid-job; a SIGTERMed worker; a burst of 30 uploads; uploads with no worker running;
bad files.
"""

from __future__ import annotations

import signal
import statistics
import time

import httpx
import pytest

from tests.captioning.conftest import Media, System
from tests.captioning.media import KNOWN_TEXT, vtt_text, word_error_rate

pytestmark = pytest.mark.slow


def timed_upload(system: System, path: object, title: str | None = None) -> tuple[dict, float]:
    started = time.perf_counter()
    answer = system.upload(path, title)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert answer.status_code == 202, answer.text
    return answer.json(), elapsed


def test_upload_to_captions_end_to_end(leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    leveret_system.start_workers(2)
    results = []
    for path in (media.speech_mp4, media.speech_webm):
        body, elapsed = timed_upload(leveret_system, path, f"Test {path.suffix}")
        assert body["status"] == "queued" and elapsed < 1.0, elapsed
        results.append(body)
    for body in results:
        video = leveret_system.wait_for(body["id"])
        assert video.status == "done", video.error
        status = leveret_system.video(body["id"])
        vtt = httpx.get(leveret_system.url + status["captions_url"])
        assert vtt.headers["content-type"].startswith("text/vtt")
        assert word_error_rate(KNOWN_TEXT, vtt_text(vtt.text)) < 0.3
        page = httpx.get(f"{leveret_system.url}/videos/{body['id']}").text
        assert '<track id="captions" kind="captions"' in page
    assert leveret_system.web is not None
    assert leveret_system.web.stop(signal.SIGTERM) == 0  # graceful
    assert all(worker.stop(signal.SIGTERM) == 0 for worker in leveret_system.workers)


def test_sigkilled_worker_loses_nothing(leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    workers = {w.pid: w for w in leveret_system.start_workers(2)}
    body, _ = timed_upload(leveret_system, media.long_mp4)
    busy = leveret_system.wait_for(body["id"], ("processing",), poll=0.02)
    assert busy.worker is not None
    victim = workers[int(busy.worker.rsplit(":", 1)[1])]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(10)
    done = leveret_system.wait_for(body["id"])
    assert done.status == "done" and done.attempts == 2
    assert done.worker != busy.worker  # the other worker finished it
    assert done.captions_vtt is not None
    assert word_error_rate(" ".join([KNOWN_TEXT] * 3), vtt_text(done.captions_vtt)) < 0.3


def test_sigtermed_worker_finishes_its_job_then_exits(leveret_system: System,
                                                      media: Media) -> None:
    leveret_system.start_web()
    [worker] = leveret_system.start_workers(1)
    body, _ = timed_upload(leveret_system, media.long_mp4)
    leveret_system.wait_for(body["id"], ("processing",), poll=0.02)
    assert worker.stop(signal.SIGTERM, timeout=60) == 0
    video = leveret_system.db.get_video(body["id"])
    assert video.status == "done" and video.attempts == 1


def test_sigtermed_worker_past_its_grace_period_requeues_its_job(
        leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    leveret_system.env["CAPTIONING_SHUTDOWN_GRACE"] = "0.01"
    [impatient] = leveret_system.start_workers(1)
    body, _ = timed_upload(leveret_system, media.long_mp4)
    leveret_system.wait_for(body["id"], ("processing",), poll=0.02)
    assert impatient.stop(signal.SIGTERM) == 0
    assert "running jobs requeued" in impatient.stderr_tail()
    del leveret_system.env["CAPTIONING_SHUTDOWN_GRACE"]
    leveret_system.start_workers(1)
    video = leveret_system.wait_for(body["id"])
    assert video.status == "done" and video.attempts == 2


@pytest.mark.timeout(400)
def test_burst_of_30_uploads_with_2_workers(leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    leveret_system.start_workers(2)
    latencies, ids = [], []
    for number in range(30):
        body, elapsed = timed_upload(leveret_system, media.short_mp4, f"burst {number}")
        latencies.append(elapsed)
        ids.append(body["id"])
    print(f"upload-to-202 latency during the burst: median {statistics.median(latencies):.3f}"
          f" s, max {max(latencies):.3f} s")
    assert statistics.median(latencies) < 0.5 and max(latencies) < 2.0
    videos = [leveret_system.wait_for(video_id, timeout=300) for video_id in ids]
    assert {v.status for v in videos} == {"done"}
    assert {v.attempts for v in videos} == {1}
    assert len({v.worker for v in videos}) == 2  # both workers took their share


def test_uploads_succeed_with_no_worker_and_are_captioned_when_one_starts(
        leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    ids = [timed_upload(leveret_system, media.short_mp4)[0]["id"] for _ in range(3)]
    time.sleep(1)
    assert {leveret_system.db.get_video(i).status for i in ids} == {"queued"}
    leveret_system.start_workers(1)
    assert {leveret_system.wait_for(i).status for i in ids} == {"done"}


def test_bad_files_get_clear_outcomes(leveret_system: System, media: Media) -> None:
    leveret_system.start_web()
    leveret_system.start_workers(1)
    expected = {"text_file": "not a video file that can be read",
                "empty_file": "the file is empty",
                "no_audio_mp4": "no audio track",
                "truncated_mp4": "truncated or damaged"}
    for name, message in expected.items():
        answer = leveret_system.upload(getattr(media, name))
        assert answer.status_code == 415, name
        assert message in answer.json()["detail"]
    # A WebM cut in half still opens: the worker captions the part that is there.
    body, _ = timed_upload(leveret_system, media.truncated_webm)
    video = leveret_system.wait_for(body["id"])
    assert video.status == "done" and video.cue_count
    assert video.captions_vtt is not None and "welcome" in video.captions_vtt.lower()
    assert [v["id"] for v in httpx.get(f"{leveret_system.url}/api/videos").json()] == [body["id"]]
