"""One frozen Settings object: the only place that reads CLI flags and environment variables.

Every other module receives a `Settings` (or the values it needs) and never looks at
`os.environ` itself. Flags given on the command line win over the environment, which wins
over the defaults.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from captioning.queues import Topology

GIB = 1024**3
ENGINES = ("whisper", "sphinx")


class ConfigError(ValueError):
    """A setting has a value that cannot work (bad URL scheme, negative limit...)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the web service, the workers and `captioning up` need to know."""

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    database_url: str = "sqlite:///var/captioning.db"
    storage_url: str = "file://var/media"
    s3_endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "whisper"
    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "default"
    cpu_threads: int = 0
    queue_prefix: str = "captioning"
    queue_type: str | None = None  # "quorum" on a RabbitMQ cluster
    max_upload_bytes: int = 2 * GIB
    max_attempts: int = 3
    retry_delays_s: tuple[float, ...] = (5.0, 30.0)
    concurrency: int = 1
    shutdown_grace_s: float = 30.0
    publish_timeout_s: float = 5.0
    republish_interval_s: float = 2.0
    tmp_dir: Path | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        _check_scheme("broker", self.broker_url, ("amqp", "amqps"))
        _check_scheme("database", self.database_url, ("sqlite", "postgresql", "postgres"))
        _check_scheme("storage", self.storage_url, ("file", "s3"))
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.max_upload_bytes <= 0:
            raise ConfigError("max upload size must be positive")
        if self.max_attempts < 1:
            raise ConfigError("max attempts must be at least 1")
        if self.queue_type not in (None, "classic", "quorum"):
            raise ConfigError(f"queue type must be classic or quorum, not {self.queue_type!r}")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if not self.retry_delays_s or any(d <= 0 for d in self.retry_delays_s):
            raise ConfigError("retry delays must be a non-empty list of positive seconds")

    @property
    def topology(self) -> Topology:
        return Topology(self.queue_prefix, self.retry_delays_s, self.queue_type)

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt + 1` (the last delay repeats)."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]

    @property
    def public_broker_url(self) -> str:
        return redact(self.broker_url)


# Environment variable -> Settings field. BROKER_URL, DATABASE_URL and STORAGE_URL are the
# names the issue and twelve-factor deployments use; the rest carry a CAPTIONING_ prefix.
ENV_FIELDS: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "DATABASE_URL": "database_url",
    "STORAGE_URL": "storage_url",
    "AWS_ENDPOINT_URL_S3": "s3_endpoint_url",
    "CAPTIONING_ENGINE": "engine",
    "CAPTIONING_MODEL": "model",
    "CAPTIONING_DEVICE": "device",
    "CAPTIONING_COMPUTE_TYPE": "compute_type",
    "CAPTIONING_CPU_THREADS": "cpu_threads",
    "CAPTIONING_QUEUE_PREFIX": "queue_prefix",
    "CAPTIONING_QUEUE_TYPE": "queue_type",
    "CAPTIONING_MAX_UPLOAD_BYTES": "max_upload_bytes",
    "CAPTIONING_MAX_ATTEMPTS": "max_attempts",
    "CAPTIONING_RETRY_DELAYS": "retry_delays_s",
    "CAPTIONING_CONCURRENCY": "concurrency",
    "CAPTIONING_SHUTDOWN_GRACE": "shutdown_grace_s",
    "CAPTIONING_TMP_DIR": "tmp_dir",
    "CAPTIONING_LOG_LEVEL": "log_level",
}


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from defaults, then the environment, then flags that are not None."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if env.get("AWS_ENDPOINT_URL"):
        values["s3_endpoint_url"] = env["AWS_ENDPOINT_URL"]
    for name, field in ENV_FIELDS.items():
        if env.get(name):
            values[field] = env[name]
    values.update({k: v for k, v in flags.items() if v is not None})
    return Settings(**_coerce(values))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    for name, given in values.items():
        value = given
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        kind = str(types[name])
        try:
            if kind == "int" and not isinstance(value, int):
                value = int(value)
            elif kind == "float" and not isinstance(value, float):
                value = float(value)
            elif kind.startswith("tuple") and isinstance(value, str):
                value = tuple(float(part) for part in value.split(",") if part.strip())
            elif kind.startswith("Path") and value is not None:
                value = Path(value)
        except ValueError as err:
            raise ConfigError(f"setting {name}: {err}") from err
        out[name] = value
    return out


def _check_scheme(what: str, url: str, schemes: tuple[str, ...]) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise ConfigError(f"{what} URL must start with {' or '.join(s + '://' for s in schemes)}: "
                          f"{redact(url)!r}")


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs and readiness lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def data_dir_settings(data_dir: Path) -> dict[str, str]:
    """The embedded defaults of `captioning up`: SQLite and a media folder under data_dir."""
    root = data_dir.resolve()
    return {"database_url": f"sqlite:///{root / 'captioning.db'}",
            "storage_url": f"file://{root / 'media'}"}
