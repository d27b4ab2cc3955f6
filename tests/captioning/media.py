"""Generated test media: speech from a known text (Debian's flite, voice rms), muxed with PyAV.

Nothing is downloaded. `make_video` writes MP4 (H.264 + AAC) or WebM (VP9 + Opus) files with a
tiny moving picture, so the fixtures stay small and quick to encode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

KNOWN_TEXT = (
    "Welcome to the video captioning test. This short clip was made by a computer voice "
    "reading a known paragraph. The worker listens to the sound, writes down the words, "
    "and groups them into captions. Nine people watched the boats sail across the quiet lake. "
    "When the sun went down, everyone walked home together."
)
SHORT_TEXT = "Hello there. This video is part of a burst of uploads."
CODECS = {"mp4": ("libx264", "aac", 16_000), "webm": ("libvpx-vp9", "libopus", 48_000)}


def speak(text: str, wav: Path) -> Path:
    """flite's rms voice: pocketsphinx and Whisper both read it well (see the team's notes)."""
    if shutil.which("flite") is None:
        raise RuntimeError("flite is not installed; `make test` installs it (apt-get flite)")
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(wav)], check=True)
    return wav


def make_video(out: Path, wav: Path | None, seconds: float | None = None,
               container: str = "mp4") -> Path:
    """A video of `wav`'s length (or `seconds`) with its audio, or with no audio if wav is None."""
    vcodec, acodec, rate = CODECS[container]
    source = av.open(str(wav)) if wav is not None else None
    if source is not None:
        stream = source.streams.audio[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else seconds
    assert seconds is not None
    with av.open(str(out), "w", format=container) as muxer:
        video = muxer.add_stream(vcodec, rate=10)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = muxer.add_stream(acodec, rate=rate) if source is not None else None
        for index in range(int(seconds * 10) + 1):
            picture = np.full((120, 160, 3), (index * 7) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            muxer.mux(video.encode(frame))
        muxer.mux(video.encode(None))
        if source is not None and audio is not None:
            resampler = av.AudioResampler(layout="mono", rate=rate)
            for decoded in source.decode(source.streams.audio[0]):
                decoded.pts = None
                for chunk in resampler.resample(decoded):
                    muxer.mux(audio.encode(chunk))
            for chunk in resampler.resample(None):
                muxer.mux(audio.encode(chunk))
            muxer.mux(audio.encode(None))
            source.close()
    return out


def normalise(text: str) -> str:
    """Lower case words without punctuation or cue timing, for word error rate."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return " ".join(words).replace("9", "nine")


def vtt_text(vtt: str) -> str:
    """The words of a WebVTT file, cue by cue."""
    import io

    import webvtt

    return " ".join(cue.text for cue in webvtt.from_buffer(io.StringIO(vtt)))


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))
