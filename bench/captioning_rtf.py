"""Captioning benchmark: real-time factor and word error rate per speech engine, and the
upload-to-202 latency of the web service.

    .venv/bin/python bench/captioning_rtf.py [--runs 5] [--uploads 20]

RTF = transcription time / audio duration (lower is faster; 0.1 means a minute of audio in
6 s). Audio decoding (PyAV, 16 kHz mono) is timed separately. The fixture is the tests' one:
flite's rms voice reading a known ~50-word paragraph (about 20 s), muxed into MP4 with PyAV.
Prints medians of --runs runs after one warm-up run per engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.captioning.media import KNOWN_TEXT, make_video, speak, vtt_text, word_error_rate

from captioning.asr import load_engine
from captioning.cues import CueRules, group_words, to_webvtt
from captioning.pipeline import extract_audio
from leveret import Broker


def engine_figures(video: Path, runs: int) -> list[str]:
    rows = []
    for name in ("whisper", "sphinx"):
        started = time.perf_counter()
        engine = load_engine(name, "tiny.en", device="cpu")
        load_s = time.perf_counter() - started
        decode, rtf, wer = [], [], []
        for run in range(runs + 1):
            started = time.perf_counter()
            audio = extract_audio(video)
            decoded = time.perf_counter()
            words = engine.transcribe(audio)
            done = time.perf_counter()
            if run == 0:
                continue  # warm-up
            seconds = len(audio) / 16_000
            decode.append(decoded - started)
            rtf.append((done - decoded) / seconds)
            vtt = to_webvtt(group_words(words, CueRules(pause_s=engine.pause_s)))
            wer.append(word_error_rate(KNOWN_TEXT, vtt_text(vtt)))
        rows.append(f"| {name} {engine.model} | {statistics.median(rtf):.3f} "
                    f"({min(rtf):.3f}-{max(rtf):.3f}) | {statistics.median(wer):.3f} | "
                    f"{statistics.median(decode) * 1000:.0f} ms | {load_s:.1f} s |")
    return rows


def upload_latency(video: Path, uploads: int, tmp: Path) -> str:
    with Broker(port=0) as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "captioning", "web", "--port", "0", "--broker", broker.url,
             "--database", f"sqlite:///{tmp}/bench.db", "--storage", f"file://{tmp}/media"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[3]
            latencies = []
            for _ in range(uploads + 1):
                # curl, as a browser would send it: httpx adds ~40 ms here (Nagle + delayed ACK)
                answer = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                     "-F", f"file=@{video}", f"{url}/api/videos"],
                    capture_output=True, text=True, check=True).stdout.split()
                assert answer[0] == "202", answer
                latencies.append(float(answer[1]))
        finally:
            proc.terminate()
            proc.wait(10)
    latencies = sorted(latencies[1:])
    size = video.stat().st_size / 1024
    return (f"upload-to-202 latency ({size:.0f} KiB MP4, {uploads} uploads, no worker busy): "
            f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        video = make_video(tmp / "speech.mp4", speak(KNOWN_TEXT, tmp / "speech.wav"))
        print(f"{os.cpu_count()} CPUs; fixture {video.stat().st_size // 1024} KiB, "
              f"medians of {args.runs} runs after a warm-up\n")
        print("| engine | RTF median (min-max) | WER | audio decode | model load |")
        print("|---|---|---|---|---|")
        for row in engine_figures(video, args.runs):
            print(row)
        print()
        print(upload_latency(video, args.uploads, tmp))


if __name__ == "__main__":
    main()
