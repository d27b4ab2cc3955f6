"""Unit tests for leveret.core.dedup: a message's identity (its x-deduplication-header, typed),
and DedupCache with and without a TTL, its size bound, forget and clear.

Messages carry a headers table built from tagged byte literals, so the field type of each
identity is exactly what a client would send. No queues, no I/O.
"""

from __future__ import annotations

import time

import pytest

from leveret.core.dedup import DedupCache, identity
from leveret.core.message import HEADERS, Message, build_properties
from leveret.core.tables import build_table, encode_value


def _offer(cache: DedupCache, message: Message) -> bool:
    """What a queue does with an arriving message: a duplicate, or remembered."""
    duplicate = cache.is_duplicate(message)
    if not duplicate:
        cache.remember(message)
    return duplicate


def _message(value: object = None, *, tagged: bytes | None = None, key: str =
             "x-deduplication-header") -> Message:
    """A message whose headers hold ``key`` = ``value`` (or the raw ``tagged`` bytes)."""
    raw = tagged if tagged is not None else encode_value(value)
    properties = build_properties({HEADERS: build_table([("other", b"I\x00\x00\x00\x01"),
                                                          (key, raw)])})
    return Message.from_wire("", "q", properties, b"body")


def test_identity_is_typed_value_of_the_header() -> None:
    assert identity(_message("order-1")) == identity(_message("order-1"))
    assert identity(_message("order-1")) != identity(_message("order-2"))
    assert identity(Message.from_wire("", "q", b"\x00\x00", b"body")) is None
    assert identity(_message("order-1", key="x-other-header")) is None
    assert identity(_message(tagged=b"V")) is None  # a void value is no identity


@pytest.mark.parametrize(("left", "right"), [
    pytest.param(1, "1", id="int-vs-str"),
    pytest.param(1, True, id="int-vs-bool"),
    pytest.param("1", True, id="str-vs-bool"),
    pytest.param(0, False, id="zero-vs-false"),
    pytest.param(1, 1.0, id="int-vs-float"),
    pytest.param("a", b"a", id="str-vs-bytes"),
])
def test_values_of_different_types_are_different_identities(left: object, right: object
                                                            ) -> None:
    assert identity(_message(left)) != identity(_message(right))
    cache = DedupCache(None, None)
    assert not _offer(cache, _message(left))
    assert not _offer(cache, _message(right))
    assert _offer(cache, _message(left))
    assert _offer(cache, _message(right))


def test_integer_widths_are_one_identity() -> None:
    int8, int32 = _message(tagged=b"b\x07"), _message(tagged=b"I\x00\x00\x00\x07")
    assert identity(int8) == identity(int32)


def test_unhashable_values_still_have_an_identity() -> None:
    cache = DedupCache(None, None)
    assert not _offer(cache, _message(["a", 1]))
    assert _offer(cache, _message(["a", 1]))
    assert not _offer(cache, _message({"k": "v"}))
    assert _offer(cache, _message({"k": "v"}))


def test_without_ttl_an_identity_is_held_until_forgotten() -> None:
    cache = DedupCache(None, None)
    first = _message("a")
    assert not _offer(cache, first)
    assert _offer(cache, _message("a"))
    assert len(cache) == 1
    cache.forget(first)  # the message left the queue
    assert len(cache) == 0
    assert not _offer(cache, _message("a"))
    assert _offer(cache, _message("a"))


def test_messages_without_identity_are_never_duplicates_nor_remembered() -> None:
    cache = DedupCache(None, None)
    plain = Message.from_wire("", "q", b"\x00\x00", b"body")
    assert not _offer(cache, plain)
    assert not _offer(cache, plain)
    cache.forget(plain)
    assert len(cache) == 0


def test_with_ttl_an_identity_is_held_for_the_ttl_only() -> None:
    cache = DedupCache(40, None)
    first = _message("a")
    assert not _offer(cache, first)
    assert _offer(cache, _message("a"))
    cache.forget(first)  # with a TTL, leaving the queue does not matter
    assert _offer(cache, _message("a"))
    time.sleep(0.06)
    assert not _offer(cache, _message("a"))  # expired: seen anew, and remembered again
    assert _offer(cache, _message("a"))


def test_a_duplicate_does_not_extend_the_ttl() -> None:
    cache = DedupCache(100, None)
    assert not _offer(cache, _message("a"))
    time.sleep(0.06)
    assert _offer(cache, _message("a"))
    time.sleep(0.06)
    assert not _offer(cache, _message("a"))  # 120 ms after the first sighting


def test_size_bound_evicts_the_oldest_identity() -> None:
    cache = DedupCache(None, 2)
    for value in ("a", "b", "c"):
        assert not _offer(cache, _message(value))
    assert len(cache) == 2
    assert _offer(cache, _message("c"))
    assert _offer(cache, _message("b"))
    assert not _offer(cache, _message("a"))  # evicted; now remembered, evicting "b"
    assert not _offer(cache, _message("b"))


def test_clear_empties_a_cache_without_ttl() -> None:
    cache = DedupCache(None, None)
    for value in ("a", "b"):
        _offer(cache, _message(value))
    cache.clear()
    assert len(cache) == 0
    assert not _offer(cache, _message("a"))


def test_clear_keeps_identities_seen_within_the_ttl() -> None:
    cache = DedupCache(10_000, None)
    _offer(cache, _message("a"))
    cache.clear()  # a purge: "seen recently" still holds
    assert _offer(cache, _message("a"))
