"""Settings from defaults, environment and flags (captioning.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioning.config import ConfigError, Settings, data_dir_settings, load_settings, redact


def test_defaults() -> None:
    settings = load_settings({}, env={})
    assert settings.engine == "whisper" and settings.model == "tiny.en"
    assert settings.max_upload_bytes == 2 * 1024**3
    assert settings.max_attempts == 3


def test_environment_then_flags() -> None:
    env = {"BROKER_URL": "amqp://u:p@rabbit:5672/%2F", "DATABASE_URL": "postgresql://db/x",
           "STORAGE_URL": "s3://bucket/videos", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
           "CAPTIONING_RETRY_DELAYS": "1,2.5", "CAPTIONING_CONCURRENCY": "2"}
    settings = load_settings({"engine": "sphinx", "database_url": None}, env=env)
    assert settings.broker_url == "amqp://u:p@rabbit:5672/%2F"
    assert settings.database_url == "postgresql://db/x"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.retry_delays_s == (1.0, 2.5)
    assert settings.concurrency == 2
    assert settings.engine == "sphinx"
    assert settings.retry_delay(1) == 1.0 and settings.retry_delay(5) == 2.5


@pytest.mark.parametrize(("field", "value", "message"), [
    ("broker_url", "http://x", "broker URL must start with amqp://"),
    ("database_url", "mysql://x", "database URL"),
    ("storage_url", "ftp://x", "storage URL"),
    ("engine", "vosk", "engine must be one of"),
    ("max_upload_bytes", 0, "must be positive"),
])
def test_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_bad_number_in_environment() -> None:
    with pytest.raises(ConfigError, match="setting concurrency"):
        load_settings({}, env={"CAPTIONING_CONCURRENCY": "many"})


def test_redact_hides_passwords() -> None:
    assert redact("amqp://guest:secret@host:5672/%2F") == "amqp://guest:***@host:5672/%2F"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_data_dir_settings(tmp_path: Path) -> None:
    urls = data_dir_settings(tmp_path)
    assert urls["database_url"] == f"sqlite:///{tmp_path}/captioning.db"
    assert urls["storage_url"] == f"file://{tmp_path}/media"
