"""pocketsphinx engine: the light fallback. Its wheel bundles a US English model.

No punctuation comes out, so cue breaks rely on pauses (a short `pause_s`). A Decoder is not
thread-safe; a lock serialises calls when a worker runs several jobs at once.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from captioning.asr import SAMPLE_RATE, Audio, ModelError, Progress
from captioning.cues import Word

FRAME_RATE = 100  # pocketsphinx frames per second (frate)
FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UH]", "[UM]"}
ALTERNATE = re.compile(r"\(\d+\)$")  # pronunciation variants: "read(2)"


@dataclass(frozen=True, slots=True)
class SphinxEngine:
    decoder: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    name: str = "sphinx"
    model: str = "en-us"
    pause_s: float = 0.2

    @classmethod
    def load(cls) -> SphinxEngine:
        try:
            from pocketsphinx import Decoder
            return cls(Decoder(samprate=SAMPLE_RATE, loglevel="FATAL"))
        except (ImportError, RuntimeError, ValueError) as err:
            raise ModelError(f"cannot load pocketsphinx: {err}") from err

    def transcribe(self, audio: Audio, progress: Progress | None = None) -> list[Word]:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        with self.lock:
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            segments = [(s.word, s.start_frame, s.end_frame) for s in self.decoder.seg()]
        if progress is not None:
            progress(1.0)
        return [Word(ALTERNATE.sub("", word), start / FRAME_RATE, (end + 1) / FRAME_RATE)
                for word, start, end in segments if word not in FILLERS]
