"""Speech engines behind one interface: 16 kHz mono float32 samples in, timed words out.

`load_engine(name, ...)` returns a ready `Engine`; importing an engine's library happens only
there, so the web service never pays for models it does not use. Engines do no file or network
I/O beyond loading their model once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from captioning.cues import Word

SAMPLE_RATE = 16_000
Audio = npt.NDArray[np.float32]
Progress = Callable[[float], None]


class ModelError(RuntimeError):
    """The model could not be loaded or failed its integrity check."""


class Engine(Protocol):
    """A loaded speech recogniser."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def pause_s(self) -> float:
        """Seconds of silence that count as a sentence break when grouping cues. Engines that
        punctuate can use a longer pause; those that do not rely on pauses alone."""
        ...

    def transcribe(self, audio: Audio, progress: Progress | None = None) -> list[Word]:
        """Words with times in seconds from the start of `audio` (16 kHz mono float32)."""
        ...


def load_engine(name: str, model: str = "tiny.en", device: str = "auto",
                compute_type: str = "default", cpu_threads: int = 0,
                concurrency: int = 1) -> Engine:
    """Load the named engine ("whisper" or "sphinx"); raises ModelError if it cannot."""
    if name == "whisper":
        from captioning.asr.whisper import WhisperEngine
        return WhisperEngine.load(model, device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads, num_workers=concurrency)
    if name == "sphinx":
        from captioning.asr.sphinx import SphinxEngine
        return SphinxEngine.load()
    raise ModelError(f"unknown speech engine {name!r} (known: whisper, sphinx)")
