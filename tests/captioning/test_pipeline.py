"""The pipeline stages alone (captioning.pipeline), on generated MP4 and WebM fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captioning.asr import Engine
from captioning.pipeline import NoAudio, NotAVideo, caption_file, extract_audio, probe, transcribe
from tests.captioning.conftest import Media
from tests.captioning.media import KNOWN_TEXT, vtt_text, word_error_rate


def test_probe_mp4_and_webm(media: Media) -> None:
    mp4 = probe(media.speech_mp4)
    assert (mp4.video_codec, mp4.audio_codec, mp4.extension) == ("h264", "aac", "mp4")
    assert mp4.duration_s == pytest.approx(20, abs=6)
    webm = probe(media.speech_webm)
    assert (webm.video_codec, webm.audio_codec, webm.extension) == ("vp9", "opus", "webm")


@pytest.mark.parametrize(("name", "error", "message"), [
    ("no_audio_mp4", NoAudio, "no audio track"),
    ("text_file", NotAVideo, "not a video file that can be read"),
    ("empty_file", NotAVideo, "the file is empty"),
    ("truncated_mp4", NotAVideo, "may be truncated or damaged"),
])
def test_probe_rejects(media: Media, name: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        probe(getattr(media, name))


def test_probe_rejects_audio_only_and_images(tmp_path: Path, media: Media) -> None:
    wav = media.speech_mp4.parent / "speech.wav"
    with pytest.raises(NotAVideo, match="no video stream"):
        probe(wav)
    png = tmp_path / "x.png"
    png.write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
        "53de0000000c4944415408d763f8ffff3f0005fe02fea7d6a4f10000000049454e44ae426082"))
    with pytest.raises(NotAVideo, match="still image"):
        probe(png)


@pytest.mark.parametrize("name", ["speech_mp4", "speech_webm"])
def test_extract_audio_is_16k_mono_float(media: Media, name: str) -> None:
    audio = extract_audio(getattr(media, name))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / 16_000 == pytest.approx(probe(getattr(media, name)).duration_s, abs=0.5)
    assert 0.05 < float(np.abs(audio).max()) <= 1.0


def test_truncated_webm_gives_the_audio_before_the_cut(media: Media) -> None:
    whole = extract_audio(media.speech_webm)
    cut = extract_audio(media.truncated_webm)
    assert 0.2 * len(whole) < len(cut) < 0.8 * len(whole)


def test_transcribe_silence_gives_no_words(whisper: Engine) -> None:
    assert transcribe(np.zeros(800, dtype=np.float32), whisper) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["speech_mp4", "speech_webm"])
def test_whisper_captions_are_accurate(media: Media, whisper: Engine, name: str) -> None:
    seen: list[float] = []
    captions = caption_file(getattr(media, name), whisper, seen.append)
    assert word_error_rate(KNOWN_TEXT, vtt_text(captions.vtt)) < 0.3
    assert captions.cue_count >= 4 and seen and seen[-1] == pytest.approx(1.0, abs=0.1)
    assert captions.vtt.startswith("WEBVTT\n")


@pytest.mark.slow
def test_sphinx_captions_are_accurate(media: Media, sphinx: Engine) -> None:
    captions = caption_file(media.speech_mp4, sphinx)
    assert word_error_rate(KNOWN_TEXT, vtt_text(captions.vtt)) < 0.3
    assert captions.cue_count >= 4
