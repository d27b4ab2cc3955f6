"""The captioning pipeline as plain functions: probe -> extract audio -> transcribe -> cues ->
WebVTT. Each stage can be called and tested alone; none knows about queues, HTTP or databases.

Media errors that re-running cannot fix (not a video, no audio track) raise `MediaError`
subclasses; the worker fails such jobs at once instead of retrying them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from captioning.asr import SAMPLE_RATE, Audio, Engine, Progress
from captioning.cues import CueRules, Word, group_words, to_webvtt

log = logging.getLogger(__name__)

# Demuxers that PyAV opens for a single still image or a raw stream: not videos for us.
IMAGE_FORMATS = ("image2", "_pipe", "gif", "apng", "webp")


class MediaError(ValueError):
    """The file cannot be captioned, whatever we retry."""


class NotAVideo(MediaError):
    """Not a video container PyAV can read (or empty, or an image)."""


class NoAudio(MediaError):
    """A video with no audio stream: there is nothing to caption."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What probing found: container format and the first video and audio streams."""

    format_name: str
    duration_s: float | None
    video_codec: str
    audio_codec: str | None

    @property
    def extension(self) -> str:
        """A file extension for the storage key, from the probed container (never the
        client's file name)."""
        names = self.format_name.split(",")
        for ext in ("mp4", "webm", "mkv", "mov", "avi", "ogg", "flv", "mpeg", "ts"):
            if ext in names or (ext == "mkv" and "matroska" in names):
                return "webm" if ext == "mkv" and "webm" in names else ext
        return "bin"


@dataclass(frozen=True, slots=True)
class Captions:
    """The pipeline's result for one file."""

    vtt: str
    cue_count: int
    word_count: int
    duration_s: float
    transcribe_s: float


def probe(path: Path) -> MediaInfo:
    """Open the file with PyAV and check it is a video container with an audio stream.

    Raises NotAVideo or NoAudio with a message fit to show the user."""
    if path.stat().st_size == 0:
        raise NotAVideo("the file is empty")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            fmt = container.format.name
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            duration = container.duration / av.time_base if container.duration else None
            if any(marker in fmt for marker in IMAGE_FORMATS):
                raise NotAVideo(f"not a video: a still image or raw stream (format {fmt})")
            if video is None:
                raise NotAVideo(f"not a video: the file has no video stream (format {fmt})")
            if audio is None:
                raise NoAudio("the video has no audio track, so there is nothing to caption")
            return MediaInfo(fmt, duration, video.codec_context.name, audio.codec_context.name)
    except av.error.FFmpegError as err:
        raise NotAVideo("not a video file that can be read; it may be truncated or damaged "
                        f"({err.strerror or err})") from err


def extract_audio(path: Path) -> Audio:
    """Decode the first audio stream to 16 kHz mono float32 samples.

    A truncated or damaged file gives the audio decoded up to the damage (logged), not an
    error; a file with no decodable audio at all raises MediaError."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[npt.NDArray[Any]] = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NoAudio("the video has no audio track, so there is nothing to caption")
            stream = container.streams.audio[0]
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            except av.error.FFmpegError as err:
                if not chunks:
                    raise
                log.warning("%s: audio damaged after %.1f s, captioning what decoded: %s",
                            path.name, sum(map(len, chunks)) / SAMPLE_RATE, err)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as err:
        raise NotAVideo(f"cannot decode the audio ({err.strerror or err})") from err
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def transcribe(audio: Audio, engine: Engine, progress: Progress | None = None) -> list[Word]:
    """Timed words; silence or an empty track gives no words."""
    if len(audio) < SAMPLE_RATE // 10:
        return []
    return engine.transcribe(audio, progress)


def caption_file(path: Path, engine: Engine, progress: Progress | None = None) -> Captions:
    """The whole pipeline on one local file."""
    probe(path)
    audio = extract_audio(path)
    started = time.perf_counter()
    words = transcribe(audio, engine, progress)
    elapsed = time.perf_counter() - started
    cues = group_words(words, CueRules(pause_s=engine.pause_s))
    return Captions(to_webvtt(cues), len(cues), len(words), len(audio) / SAMPLE_RATE, elapsed)
