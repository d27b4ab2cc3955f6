"""Users, SASL mechanisms (PLAIN, AMQPLAIN) and vhost permissions.

Passwords are stored as RabbitMQ stores them (``rabbit_password_hashing_sha256``): base64 of a
4-byte salt followed by SHA-256(salt + password), so hashes move between a RabbitMQ definitions
export and a Leveret config file unchanged.

Permissions are RabbitMQ's three regular expressions per vhost (configure, write, read),
searched anywhere in the resource name; the empty pattern grants nothing. The default exchange
is checked under the name ``amq.default``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from leveret.core.tables import TableError, decode_table
from leveret.errors import AccessRefused, LoginRefused

MECHANISMS = ("PLAIN", "AMQPLAIN")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A RabbitMQ-compatible salted SHA-256 password hash."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _check_hash(password: bytes, password_hash: str) -> bool:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    salt, digest = raw[:4], raw[4:]
    expected = hashlib.sha256(salt + password).digest()
    return len(digest) == 32 and hmac.compare_digest(digest, expected)


@dataclass(frozen=True, slots=True)
class Permission:
    """The configure, write and read patterns of one user on one vhost."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, resource: str) -> bool:
        pattern: str = getattr(self, kind)
        return pattern != "" and re.search(pattern, resource or "amq.default") is not None


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str
    tags: tuple[str, ...] = ()
    permissions: Mapping[str, Permission] = field(default_factory=dict)
    loopback_only: bool = False

    def check_password(self, password: bytes) -> bool:
        return _check_hash(password, self.password_hash)

    def permission(self, vhost: str) -> Permission | None:
        return self.permissions.get(vhost)

    def check(self, vhost: str, kind: str, resource_kind: str, resource: str) -> None:
        """Raise AccessRefused (channel-level 403) unless ``kind`` access is granted."""
        permission = self.permissions.get(vhost)
        if permission is None or not permission.allows(kind, resource):
            raise AccessRefused(
                f"{kind} access to {resource_kind} '{resource or 'amq.default'}' in vhost "
                f"'{vhost}' refused for user '{self.name}'"
            )


class UserDirectory:
    """The broker's users, and the SASL exchange that picks one."""

    def __init__(self, users: Iterable[User]) -> None:
        self._users = {user.name: user for user in users}

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def add(self, user: User) -> None:
        self._users[user.name] = user

    def all(self) -> list[User]:
        return list(self._users.values())

    def authenticate(self, mechanism: str, response: bytes, *, from_loopback: bool) -> User:
        """Return the user the SASL response proves, or raise LoginRefused (403)."""
        if mechanism not in MECHANISMS:
            raise LoginRefused(f"unsupported authentication mechanism '{mechanism}'")
        username, password = _credentials(mechanism, response)
        user = self._users.get(username)
        if user is None or not user.check_password(password):
            raise LoginRefused(
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
        if user.loopback_only and not from_loopback:
            raise LoginRefused(
                f"user '{username}' can only connect via localhost"
            )
        return user


def _credentials(mechanism: str, response: bytes) -> tuple[str, bytes]:
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise LoginRefused("malformed PLAIN response")
        username, password = parts[1], parts[2]
    else:  # AMQPLAIN: a field table without its length prefix
        try:
            table, _ = decode_table(struct.pack(">I", len(response)) + response)
        except TableError as err:
            raise LoginRefused(f"malformed AMQPLAIN response: {err}") from err
        login, secret = table.get("LOGIN"), table.get("PASSWORD")
        if not isinstance(login, str | bytes) or not isinstance(secret, str | bytes):
            raise LoginRefused("AMQPLAIN response lacks LOGIN or PASSWORD")
        username = login.encode() if isinstance(login, str) else login
        password = secret.encode() if isinstance(secret, str) else secret
    try:
        return username.decode(), password
    except UnicodeDecodeError as err:
        raise LoginRefused("user name is not valid UTF-8") from err
