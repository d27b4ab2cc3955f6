"""`captioning up` and the command line (captioning.up, captioning.cli)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from captioning.cli import build_parser, main
from tests.captioning.conftest import Media, Proc


def start_up(tmp_path: Path, workers: int, name: str) -> tuple[Proc, str]:
    env = {**os.environ, "CAPTIONING_CPU_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = Proc(["up", "--port", "0", "--workers", str(workers), "--data-dir",
                 str(tmp_path / "var")], env, tmp_path / f"{name}.log")
    line = proc.wait_for_line("captioning up: ready at ", timeout=120)
    return proc, line.split()[4]


@pytest.mark.slow
def test_up_runs_the_whole_system_and_survives_a_restart(tmp_path: Path, media: Media) -> None:
    # First run: no workers. The upload is accepted and waits.
    first, url = start_up(tmp_path, 0, "first")
    with media.short_mp4.open("rb") as f:
        answer = httpx.post(f"{url}/api/videos", files={"file": ("a.mp4", f)}, timeout=30)
    assert answer.status_code == 202
    video_id = answer.json()["id"]
    assert httpx.get(url).status_code == 200
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C
    assert first.stdout[-1] == "captioning up: stopped"
    # Second run, with a worker: the embedded broker started empty, and the video from the
    # last run is queued again and captioned.
    second, url = start_up(tmp_path, 1, "second")
    assert any(line.startswith("[worker 1] captioning worker ready") for line in second.stdout)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/api/videos/{video_id}").json()["status"] != "done":
        assert time.monotonic() < deadline, second.stderr_tail()
        time.sleep(0.2)
    assert second.stop(signal.SIGTERM) == 0
    assert second.stdout[-1] == "captioning up: stopped"
    assert (tmp_path / "var" / "captioning.db").exists()
    assert len(list((tmp_path / "var" / "media").iterdir())) == 1


def test_parser_knows_the_three_commands() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).port == 8000
    assert parser.parse_args(["up"]).workers == 2
    assert parser.parse_args(["worker", "--broker", "amqp://x"]).broker_url == "amqp://x"
    assert parser.parse_args(["web", "--storage", "s3://b/p"]).storage_url == "s3://b/p"


def test_bad_settings_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--broker", "http://nope"]) == 2
    assert "broker URL must start with amqp://" in capsys.readouterr().err
    assert main(["up", "--workers", "-1"]) == 2
