"""Unit tests for leveret.amqp.auth: password hashes, SASL PLAIN/AMQPLAIN, permissions.

The hash scheme is RabbitMQ's rabbit_password_hashing_sha256 (base64 of a 4-byte salt and
SHA-256(salt + password)), checked against the worked example in RabbitMQ's documentation.
SASL responses are byte literals.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from leveret.amqp.auth import (
    MECHANISMS,
    Permission,
    User,
    UserDirectory,
    hash_password,
)
from leveret.errors import AccessRefused, LoginRefused

REFUSED = "Login was refused using authentication mechanism {}. For details see the broker logfile."


@pytest.fixture
def users() -> UserDirectory:
    return UserDirectory([
        User("guest", hash_password("guest"), loopback_only=True),
        User("bob", hash_password("s3cr\u00e9t"), permissions={"/": Permission()}),
    ])


# -- password hashes -------------------------------------------------------------------------


def test_hash_matches_rabbitmq_documentation_example() -> None:
    # https://www.rabbitmq.com/docs/passwords: salt 908D C60A, password "test12".
    salt = bytes.fromhex("908DC60A")
    assert hash_password("test12", salt) == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_hash_is_base64_of_salt_and_sha256_of_salt_and_utf8_password() -> None:
    salt = b"\x00\x01\x02\xff"
    digest = hashlib.sha256(b"\x00\x01\x02\xff" + b"s3cr\xc3\xa9t").digest()
    assert hash_password("s3cr\u00e9t", salt) == base64.b64encode(salt + digest).decode()


def test_random_salts_differ_and_both_verify() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert len(base64.b64decode(first)) == 36
    for password_hash in (first, second):
        user = User("u", password_hash)
        assert user.check_password(b"pw")
        assert not user.check_password(b"pw ")


@pytest.mark.parametrize("password_hash", ["not base64!", "", base64.b64encode(b"abcd").decode()])
def test_malformed_stored_hash_never_verifies(password_hash: str) -> None:
    assert not User("u", password_hash).check_password(b"")


# -- SASL ------------------------------------------------------------------------------------


def test_mechanisms() -> None:
    assert MECHANISMS == ("PLAIN", "AMQPLAIN")


@pytest.mark.parametrize(
    "response",
    [b"\x00bob\x00s3cr\xc3\xa9t", b"bob\x00bob\x00s3cr\xc3\xa9t"],
    ids=["plain", "plain-with-authzid"],
)
def test_plain(users: UserDirectory, response: bytes) -> None:
    assert users.authenticate("PLAIN", response, from_loopback=False).name == "bob"


def test_amqplain_is_a_table_without_its_length_prefix(users: UserDirectory) -> None:
    response = b"\x05LOGINS\x00\x00\x00\x03bob" + b"\x08PASSWORDS\x00\x00\x00\x07s3cr\xc3\xa9t"
    assert users.authenticate("AMQPLAIN", response, from_loopback=False).name == "bob"
    as_bytes = b"\x05LOGINx\x00\x00\x00\x03bob" + b"\x08PASSWORDx\x00\x00\x00\x07s3cr\xc3\xa9t"
    assert users.authenticate("AMQPLAIN", as_bytes, from_loopback=False).name == "bob"


def test_amqplain_with_a_length_prefix_is_malformed(users: UserDirectory) -> None:
    body = b"\x05LOGINS\x00\x00\x00\x03bob" + b"\x08PASSWORDS\x00\x00\x00\x07s3cr\xc3\xa9t"
    response = len(body).to_bytes(4, "big") + body
    with pytest.raises(LoginRefused, match="malformed AMQPLAIN response: "):
        users.authenticate("AMQPLAIN", response, from_loopback=False)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"\x05LOGINS\x00\x00\x00\x03bob", "AMQPLAIN response lacks LOGIN or PASSWORD"),
        (b"\x05LOGINI\x00\x00\x00\x03\x08PASSWORDS\x00\x00\x00\x00",
         "AMQPLAIN response lacks LOGIN or PASSWORD"),
        (b"\x05LOGINS\x00\x00\x00\x09bob", "malformed AMQPLAIN response: long string runs past"),
    ],
)
def test_amqplain_malformed(users: UserDirectory, response: bytes, message: str) -> None:
    with pytest.raises(LoginRefused, match=message):
        users.authenticate("AMQPLAIN", response, from_loopback=True)


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        ("PLAIN", b"\x00bob\x00wrong"),
        ("PLAIN", b"\x00nobody\x00s3cr\xc3\xa9t"),
        ("PLAIN", b"\x00bob\x00"),
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x03bob\x08PASSWORDS\x00\x00\x00\x01x"),
    ],
    ids=["wrong-password", "unknown-user", "empty-password", "amqplain-wrong-password"],
)
def test_bad_credentials_are_refused(
    users: UserDirectory, mechanism: str, response: bytes
) -> None:
    with pytest.raises(LoginRefused) as caught:
        users.authenticate(mechanism, response, from_loopback=True)
    assert caught.value.text == REFUSED.format(mechanism)
    assert caught.value.reply_code == 403
    assert caught.value.connection_level


def test_unknown_mechanism_is_refused(users: UserDirectory) -> None:
    with pytest.raises(LoginRefused, match=r"^unsupported authentication mechanism 'EXTERNAL'$"):
        users.authenticate("EXTERNAL", b"", from_loopback=True)
    with pytest.raises(LoginRefused, match="mechanism 'plain'"):
        users.authenticate("plain", b"\x00bob\x00s3cr\xc3\xa9t", from_loopback=True)


def test_malformed_plain_and_non_utf8_user(users: UserDirectory) -> None:
    with pytest.raises(LoginRefused, match=r"^malformed PLAIN response$"):
        users.authenticate("PLAIN", b"bob:secret", from_loopback=True)
    with pytest.raises(LoginRefused, match="user name is not valid UTF-8"):
        users.authenticate("PLAIN", b"\x00\xff\xfe\x00pw", from_loopback=True)


def test_loopback_only_user(users: UserDirectory) -> None:
    guest = b"\x00guest\x00guest"
    assert users.authenticate("PLAIN", guest, from_loopback=True).name == "guest"
    with pytest.raises(LoginRefused, match=r"^user 'guest' can only connect via localhost$"):
        users.authenticate("PLAIN", guest, from_loopback=False)
    # A wrong password from afar gets the generic text, not a hint that the user exists.
    with pytest.raises(LoginRefused, match="Login was refused"):
        users.authenticate("PLAIN", b"\x00guest\x00nope", from_loopback=False)


def test_user_directory_lookup_and_add(users: UserDirectory) -> None:
    assert "bob" in users and "carol" not in users
    assert users.get("carol") is None
    users.add(User("carol", hash_password("pw")))
    assert users.authenticate("PLAIN", b"\x00carol\x00pw", from_loopback=False).name == "carol"


# -- permissions -----------------------------------------------------------------------------


def test_default_permission_allows_everything() -> None:
    permission = Permission()
    for kind in ("configure", "write", "read"):
        assert permission.allows(kind, "anything")
        assert permission.allows(kind, "")


def test_empty_pattern_denies_everything() -> None:
    permission = Permission(configure="", write=".*", read="")
    assert not permission.allows("configure", "q")
    assert not permission.allows("configure", "")
    assert not permission.allows("read", "amq.default")
    assert permission.allows("write", "q")


def test_patterns_are_searched_unanchored_like_rabbitmq() -> None:
    permission = Permission(configure="^app-", write="logs", read="^$")
    assert permission.allows("configure", "app-1")
    assert not permission.allows("configure", "my-app-1")
    assert permission.allows("write", "service.logs.eu")
    assert not permission.allows("read", "q")


def test_default_exchange_is_checked_as_amq_default() -> None:
    permission = Permission(write="^amq\\.default$")
    assert permission.allows("write", "")
    assert not permission.allows("write", "amq.direct")


def test_user_check_raises_channel_level_access_refused() -> None:
    user = User("bob", hash_password("x"), permissions={"/": Permission(write="^own-")})
    user.check("/", "write", "exchange", "own-ex")
    assert user.permission("/") == Permission(write="^own-")
    assert user.permission("other") is None
    with pytest.raises(AccessRefused) as caught:
        user.check("/", "write", "exchange", "")
    assert caught.value.text == (
        "write access to exchange 'amq.default' in vhost '/' refused for user 'bob'"
    )
    assert caught.value.reply_code == 403 and not caught.value.connection_level
    with pytest.raises(AccessRefused, match=r"^read access to queue 'q' in vhost 'other' "
                                            "refused for user 'bob'$"):
        user.check("other", "read", "queue", "q")
