"""Settings: one frozen object, built once at start from defaults, a TOML config file, the
environment (``LEVERET_*``) and command-line flags, in rising order of precedence.

This is the only module that reads flags, environment variables or the config file; everything
else receives a `Settings`. The config file format is in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from leveret.amqp.auth import Permission, User, hash_password
from leveret.core.arguments import POLICY_KEYS, Policy
from leveret.errors import ConfigError

MIB = 1024 * 1024
DEFAULT_VHOST = "/"


def _guest() -> tuple[User, ...]:
    # RabbitMQ's default user: full rights on "/", refused from anywhere but loopback.
    return (User("guest", hash_password("guest"), ("administrator",),
                 {DEFAULT_VHOST: Permission()}, loopback_only=True),)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5672
    data_dir: Path | None = None
    log_level: str = "info"
    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * MIB
    handshake_timeout: float = 10.0
    disk_free_limit: int = 1024 * MIB
    memory_high_watermark: float = 0.4
    consumer_timeout: int = 1_800_000  # ms a delivery may stay unacknowledged; 0: no limit
    vhosts: tuple[str, ...] = (DEFAULT_VHOST,)
    users: tuple[User, ...] = field(default_factory=_guest)
    policies: tuple[Policy, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, "
                              f"got {self.log_level!r}")
        if not 4096 <= self.frame_max <= 2**31 - 1:
            raise ConfigError(f"frame_max must be at least 4096, got {self.frame_max}")
        if not 1 <= self.channel_max <= 65535:
            raise ConfigError(f"channel_max must be between 1 and 65535, got {self.channel_max}")
        if not 0 <= self.heartbeat <= 65535:
            raise ConfigError(f"heartbeat must be between 0 and 65535, got {self.heartbeat}")
        if not 0 < self.memory_high_watermark <= 1:
            raise ConfigError("memory_high_watermark is a fraction of physical memory, "
                              f"between 0 and 1; got {self.memory_high_watermark}")
        if self.disk_free_limit < 0:
            raise ConfigError(f"disk_free_limit must be positive, got {self.disk_free_limit}")
        if not 0 < self.max_message_size <= 512 * MIB:
            raise ConfigError("max_message_size must be between 1 byte and 512 MiB, "
                              f"got {self.max_message_size}")


LOG_LEVELS = ("debug", "info", "warning", "error")
_SERVER_KEYS = {f.name for f in fields(Settings)} - {"users", "vhosts", "policies"}
_ENV = {"host": "LEVERET_HOST", "port": "LEVERET_PORT", "data_dir": "LEVERET_DATA_DIR",
        "log_level": "LEVERET_LOG_LEVEL"}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < config file < environment < ``overrides`` (command-line flags; None = unset)."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get("LEVERET_CONFIG"):
        config_file = Path(environ["LEVERET_CONFIG"])
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_config_file(config_file))
    for key, var in _ENV.items():
        if environ.get(var):
            values[key] = environ[var]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(values)


def _build(values: dict[str, Any]) -> Settings:
    try:
        if "port" in values:
            values["port"] = int(values["port"])
        if values.get("data_dir") is not None:
            values["data_dir"] = Path(values["data_dir"])
        for key in ("heartbeat", "frame_max", "channel_max", "max_message_size",
                    "disk_free_limit", "consumer_timeout"):
            if key in values:
                values[key] = int(values[key])
        for key in ("handshake_timeout", "memory_high_watermark"):
            if key in values:
                values[key] = float(values[key])
        if "log_level" in values:
            values["log_level"] = str(values["log_level"]).lower()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid setting: {err}") from err
    return replace(Settings(), **values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    unknown = set(document) - {"server", "vhosts", "users", "policies"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {', '.join(sorted(unknown))}")
    server = document.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"config file {path}: [server] must be a table")
    values: dict[str, Any] = dict(server)
    bad = set(values) - _SERVER_KEYS
    if bad:
        raise ConfigError(f"config file {path}: unknown [server] key(s) {', '.join(sorted(bad))}")
    vhosts = document.get("vhosts", [DEFAULT_VHOST])
    if not isinstance(vhosts, list) or not all(isinstance(v, str) and v for v in vhosts):
        raise ConfigError(f"config file {path}: vhosts must be a list of non-empty names")
    values["vhosts"] = tuple(dict.fromkeys(vhosts))
    if "users" in document:
        if not isinstance(document["users"], list):
            raise ConfigError(f"config file {path}: users must be an array of tables "
                              "([[users]])")
        values["users"] = tuple(_user(path, spec) for spec in document["users"])
    if "policies" in document:
        if not isinstance(document["policies"], list):
            raise ConfigError(f"config file {path}: policies must be an array of tables "
                              "([[policies]])")
        values["policies"] = tuple(_policy(path, spec) for spec in document["policies"])
    return values


def _policy(path: Path, spec: Any) -> Policy:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"config file {path}: every [[policies]] entry needs a name")
    name = spec["name"]
    unknown = set(spec) - {"name", "pattern", "definition", "vhost", "priority", "apply_to"}
    if unknown:
        raise ConfigError(f"config file {path}: policy {name!r}: unknown key(s) "
                          f"{', '.join(sorted(unknown))}")
    pattern, definition = spec.get("pattern"), spec.get("definition")
    if not isinstance(pattern, str) or not isinstance(definition, dict):
        raise ConfigError(f"config file {path}: policy {name!r} needs a pattern and a "
                          "definition table")
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"config file {path}: policy {name!r}: pattern {pattern!r} is not "
                          f"a regular expression: {err}") from err
    bad = set(definition) - set(POLICY_KEYS)
    if bad:
        raise ConfigError(f"config file {path}: policy {name!r}: unsupported key(s) "
                          f"{', '.join(sorted(bad))}; supported: "
                          f"{', '.join(sorted(POLICY_KEYS))}")
    apply_to = spec.get("apply_to", "queues")
    if apply_to not in ("queues", "all"):
        raise ConfigError(f"config file {path}: policy {name!r}: apply_to must be queues or "
                          "all")
    return Policy(name, pattern, definition, str(spec.get("vhost", DEFAULT_VHOST)),
                  int(spec.get("priority", 0)), apply_to)


def _user(path: Path, spec: Any) -> User:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"config file {path}: every [[users]] entry needs a name")
    name = spec["name"]
    unknown = set(spec) - {"name", "password", "password_hash", "tags", "permissions",
                           "loopback_only"}
    if unknown:
        raise ConfigError(f"config file {path}: user {name!r}: unknown key(s) "
                          f"{', '.join(sorted(unknown))}")
    if ("password" in spec) == ("password_hash" in spec):
        raise ConfigError(f"config file {path}: user {name!r} needs exactly one of "
                          "password or password_hash")
    password_hash = spec.get("password_hash") or hash_password(str(spec["password"]))
    tags = spec.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ConfigError(f"config file {path}: user {name!r}: tags must be a list of strings")
    if not isinstance(spec.get("permissions", {}), dict):
        raise ConfigError(f"config file {path}: user {name!r}: permissions must be a table "
                          "of vhosts")
    permissions = {}
    for vhost, perm in spec.get("permissions", {}).items():
        if not isinstance(perm, dict) or set(perm) - {"configure", "write", "read"}:
            raise ConfigError(f"config file {path}: user {name!r}: permissions for {vhost!r} "
                              "take configure, write and read patterns")
        for kind, pattern in perm.items():
            try:
                re.compile(str(pattern))
            except re.error as err:
                raise ConfigError(f"config file {path}: user {name!r}: {kind} pattern "
                                  f"{pattern!r} for {vhost!r} is not a regular expression: "
                                  f"{err}") from err
        permissions[vhost] = Permission(**{k: str(v) for k, v in perm.items()})
    return User(name, password_hash, tuple(tags), permissions,
                loopback_only=bool(spec.get("loopback_only", False)))
