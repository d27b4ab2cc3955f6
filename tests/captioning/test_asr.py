"""Speech engines behind one interface (captioning.asr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioning.asr import Engine, ModelError, load_engine
from captioning.asr.whisper import (
    BUNDLED_SHA256,
    bundled_model_path,
    pick_device,
    resolve_model,
    verify_sha256,
)
from captioning.pipeline import extract_audio
from tests.captioning.conftest import Media


def test_bundled_model_is_verified() -> None:
    path = bundled_model_path()
    verify_sha256(path / "model.bin", BUNDLED_SHA256)
    assert resolve_model("tiny.en") == str(path)
    assert resolve_model("base.en") == "base.en"  # a hub name, passed through
    assert resolve_model("/models/x") == "/models/x"


def test_changed_model_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.bin"
    fake.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="refusing to load a changed model"):
        verify_sha256(fake, BUNDLED_SHA256)
    with pytest.raises(ModelError, match="cannot read model file"):
        verify_sha256(tmp_path / "absent.bin", BUNDLED_SHA256)


def test_device_choice() -> None:
    assert pick_device("cpu", "default") == ("cpu", "int8")
    assert pick_device("cuda", "default") == ("cuda", "float16")
    assert pick_device("cpu", "float32") == ("cpu", "float32")


def test_unknown_engine() -> None:
    with pytest.raises(ModelError, match="unknown speech engine 'vosk'"):
        load_engine("vosk")


def test_missing_model_directory_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load Whisper model"):
        load_engine("whisper", str(tmp_path / "no-such-model"), device="cpu")


@pytest.mark.parametrize("engine_name", ["whisper", "sphinx"])
def test_engines_return_timed_words(request: pytest.FixtureRequest, media: Media,
                                    engine_name: str) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    words = engine.transcribe(extract_audio(media.short_mp4))
    assert len(words) >= 5
    assert all(0 <= w.start <= w.end for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert "burst" in " ".join(w.text.lower() for w in words)
