"""Unit tests for leveret.config: defaults < config file < environment < overrides.

Config files are written to pytest's tmp_path; the environment is passed explicitly, so no
test reads or changes the real process environment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from leveret.config import Settings, load_settings
from leveret.errors import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leveret.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 5672, "info")
    assert (settings.frame_max, settings.channel_max, settings.heartbeat) == (131072, 2047, 60)
    assert settings.data_dir is None
    assert settings.vhosts == ("/",)
    [guest] = settings.users
    assert (guest.name, guest.loopback_only, guest.tags) == ("guest", True, ("administrator",))
    assert guest.check_password(b"guest")
    assert guest.permission("/") is not None


def test_precedence(tmp_path: Path) -> None:
    path = _config(tmp_path, '[server]\nport = 1111\nhost = "0.0.0.0"\nheartbeat = 5\n')
    env = {"LEVERET_PORT": "2222"}
    assert load_settings(environ={}).port == 5672
    assert load_settings(config_file=path, environ={}).port == 1111
    assert load_settings(config_file=path, environ=env).port == 2222
    settings = load_settings({"port": 3333, "host": None}, config_file=path, environ=env)
    assert (settings.port, settings.host, settings.heartbeat) == (3333, "0.0.0.0", 5)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _config(tmp_path, '[server]\nlog_level = "warning"\n')
    assert load_settings(environ={"LEVERET_CONFIG": str(path)}).log_level == "warning"


def test_environment_values(tmp_path: Path) -> None:
    settings = load_settings(environ={
        "LEVERET_HOST": "::1", "LEVERET_DATA_DIR": str(tmp_path), "LEVERET_LOG_LEVEL": "DEBUG",
        "LEVERET_PORT": "",  # empty means unset
    })
    assert (settings.host, settings.data_dir, settings.log_level) == ("::1", tmp_path, "debug")
    assert settings.port == 5672


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_vhosts_and_users(tmp_path: Path) -> None:
    path = _config(tmp_path, """
vhosts = ["/", "staging", "/"]

[[users]]
name = "alice"
password = "wonder"
tags = ["monitoring"]
[users.permissions."/"]
configure = "^alice-"
write = ".*"
read = ".*"

[[users]]
name = "svc"
password_hash = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
loopback_only = true
""")
    settings = load_settings(config_file=path, environ={})
    assert settings.vhosts == ("/", "staging")
    alice, svc = settings.users
    assert (alice.name, alice.tags, alice.loopback_only) == ("alice", ("monitoring",), False)
    assert alice.check_password(b"wonder")
    permission = alice.permission("/")
    assert permission is not None and permission.configure == "^alice-"
    assert alice.permission("staging") is None
    assert svc.check_password(b"test12") and svc.loopback_only


INVALID_FILES = [
    pytest.param("[server\nport = 1", "is not valid TOML", id="bad-toml"),
    pytest.param("[bogus]\nx = 1\n", r"unknown section\(s\) bogus", id="unknown-section"),
    pytest.param("[server]\nprot = 5672\n", r"unknown \[server\] key\(s\) prot",
                 id="unknown-server-key"),
    pytest.param("[server]\nport = 70000\n", "port must be between 0 and 65535, got 70000",
                 id="port-too-big"),
    pytest.param("[server]\nport = -1\n", "port must be between 0 and 65535, got -1",
                 id="port-negative"),
    pytest.param('[server]\nport = "http"\n', "invalid setting: invalid literal for int",
                 id="port-not-a-number"),
    pytest.param("[server]\nframe_max = 100\n", "frame_max must be at least 4096, got 100",
                 id="frame-max"),
    pytest.param("[server]\nchannel_max = 0\n", "channel_max must be between 1 and 65535",
                 id="channel-max"),
    pytest.param("[server]\nheartbeat = 70000\n", "heartbeat must be between 0 and 65535",
                 id="heartbeat"),
    pytest.param('[server]\nlog_level = "loud"\n',
                 "log level must be one of debug, info, warning, error, got 'loud'",
                 id="log-level"),
    pytest.param("[server]\nmax_message_size = 0\n",
                 "max_message_size must be between 1 byte and 512 MiB", id="max-message-size"),
    pytest.param('vhosts = "/"\n', "vhosts must be a list of non-empty names",
                 id="vhosts-not-list"),
    pytest.param('vhosts = ["/", ""]\n', "vhosts must be a list of non-empty names",
                 id="vhosts-empty-name"),
    pytest.param('[[users]]\npassword = "x"\n', r"every \[\[users\]\] entry needs a name",
                 id="user-without-name"),
    pytest.param('[[users]]\nname = "a"\n', "user 'a' needs exactly one of password or "
                 "password_hash", id="user-without-password"),
    pytest.param('[[users]]\nname = "a"\npassword = "x"\npassword_hash = "y"\n',
                 "needs exactly one of password or password_hash", id="user-both-passwords"),
    pytest.param('[[users]]\nname = "a"\npassword = "x"\nadmin = true\n',
                 r"user 'a': unknown key\(s\) admin", id="user-unknown-key"),
    pytest.param('[[users]]\nname = "a"\npassword = "x"\n[users.permissions."/"]\nall = ".*"\n',
                 "permissions for '/' take configure, write and read patterns",
                 id="permission-unknown-key"),
    pytest.param('[[users]]\nname = "a"\npassword = "x"\n[users.permissions."/"]\nread = "(["\n',
                 "read pattern '\\(\\[' for '/' is not a regular expression",
                 id="permission-bad-regex"),
]


@pytest.mark.parametrize(("text", "message"), INVALID_FILES)
def test_invalid_config_file(tmp_path: Path, text: str, message: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=path, environ={})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("server = 5\n", id="server-not-a-table"),
        pytest.param('[[users]]\nname = "a"\npassword = "x"\npermissions = 5\n',
                     id="permissions-not-a-table"),
        pytest.param('[[users]]\nname = "a"\npassword = "x"\ntags = 5\n',
                     id="tags-not-a-list"),
    ],
)
def test_wrongly_shaped_config_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    # A config file of the wrong shape must give a clear ConfigError, not a TypeError or
    # AttributeError from deep inside the loader.
    with pytest.raises(ConfigError, match="config file"):
        load_settings(config_file=_config(tmp_path, text), environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"cannot read config file {missing}: "):
        load_settings(config_file=missing, environ={})


def test_bad_port_from_environment_and_overrides() -> None:
    with pytest.raises(ConfigError, match="invalid setting: invalid literal for int"):
        load_settings(environ={"LEVERET_PORT": "fifty"})
    with pytest.raises(ConfigError, match="port must be between 0 and 65535, got 65536"):
        load_settings({"port": 65536}, environ={})
    with pytest.raises(ConfigError, match="log level must be one of"):
        load_settings(environ={"LEVERET_LOG_LEVEL": "chatty"})
