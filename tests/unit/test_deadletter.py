"""Unit tests for leveret.core.deadletter: the x-death history RabbitMQ 3.10 writes on a
dead-lettered copy, the x-first-death-* / x-last-death-* headers, and cycle detection as in
rabbit_dead_letter:is_cycle.

Messages are built from byte-literal property blocks; results are read back through
`Message.headers`, and the field types on the wire are checked on the raw properties bytes
with `table_entries`. No queues, no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from leveret.core.deadletter import (
    DELIVERY_LIMIT,
    EXPIRED,
    MAXLEN,
    REJECTED,
    dead_letter_copy,
    is_cycle,
    record_death,
)
from leveret.core.message import (
    CONTENT_TYPE,
    DELIVERY_MODE,
    EXPIRATION,
    HEADERS,
    MESSAGE_ID,
    PRIORITY,
    Message,
    build_properties,
    property_fields,
)
from leveret.core.tables import Timestamp, build_table, table_entries

T1, T2, T3 = 1_700_000_000, 1_700_000_100, 1_700_000_200


def _shortstr(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


def _longstr(text: str) -> bytes:
    return b"S" + struct.pack(">I", len(text)) + text.encode()


def _message(*, headers: list[tuple[str, bytes]] | None = None, expiration: str | None = None,
             exchange: str = "orders", routing_key: str = "order.created") -> Message:
    fields = {CONTENT_TYPE: _shortstr("application/json"), DELIVERY_MODE: b"\x02",
              PRIORITY: b"\x03", MESSAGE_ID: _shortstr("m-1")}
    if headers is not None:
        fields[HEADERS] = build_table(headers)
    if expiration is not None:
        fields[EXPIRATION] = _shortstr(expiration)
    return Message.from_wire(exchange, routing_key, build_properties(fields), b"payload")


def _raw_headers(message: Message) -> dict[str, bytes]:
    """The headers table of ``message`` as key -> tagged value bytes, straight off the wire."""
    assert message.headers_at >= 0
    return dict(table_entries(message.properties, message.headers_at))


def _raw_deaths(message: Message) -> list[dict[str, bytes]]:
    """Each x-death table as key -> tagged value bytes, in array order."""
    tagged = _raw_headers(message)["x-death"]
    assert tagged[:1] == b"A"
    end = 5 + struct.unpack_from(">I", tagged, 1)[0]
    assert end == len(tagged)
    tables, pos = [], 5
    while pos < end:
        assert tagged[pos : pos + 1] == b"F"
        tables.append(dict(table_entries(tagged, pos + 1)))
        pos += 5 + struct.unpack_from(">I", tagged, pos + 1)[0]
    return tables


def _death(queue: str, reason: str, **fields: Any) -> dict[str, Any]:
    return {"queue": queue, "reason": reason, **fields}


# -- the first death -------------------------------------------------------------------


def test_first_death_records_one_entry_and_drops_the_expiration() -> None:
    original = _message(expiration="60000")
    copy, history = dead_letter_copy(original, EXPIRED, "work", "dlx", None, T1)
    assert (copy.exchange, copy.routing_key, copy.body) == ("dlx", "order.created", b"payload")
    assert copy.expiration is None
    assert EXPIRATION not in property_fields(copy.properties)
    [death] = copy.headers["x-death"]
    assert death == {"count": 1, "reason": "expired", "queue": "work", "time": T1,
                     "exchange": "orders", "routing-keys": ["order.created"],
                     "original-expiration": "60000"}
    assert type(death["time"]) is Timestamp
    assert history == copy.headers["x-death"]


def test_first_death_sets_first_and_last_death_headers() -> None:
    copy, _ = dead_letter_copy(_message(), REJECTED, "work", "dlx", None, T1)
    headers = copy.headers
    assert {key: headers[key] for key in headers if key.startswith("x-")} == {
        "x-death": headers["x-death"],
        "x-first-death-reason": "rejected", "x-first-death-queue": "work",
        "x-first-death-exchange": "orders",
        "x-last-death-reason": "rejected", "x-last-death-queue": "work",
        "x-last-death-exchange": "orders",
    }


def test_x_death_fields_have_rabbitmq_wire_types() -> None:
    copy, _ = dead_letter_copy(_message(expiration="1500"), EXPIRED, "work", "dlx", None, T1)
    [death] = _raw_deaths(copy)
    assert set(death) == {"count", "reason", "queue", "time", "exchange", "routing-keys",
                          "original-expiration"}
    assert death["count"] == b"l" + struct.pack(">q", 1)
    assert death["time"] == b"T" + struct.pack(">Q", T1)
    routing_key = _longstr("order.created")
    assert death["routing-keys"] == b"A" + struct.pack(">I", len(routing_key)) + routing_key
    assert death["reason"] == _longstr("expired")
    assert death["queue"] == _longstr("work")
    assert death["exchange"] == _longstr("orders")
    assert death["original-expiration"] == _longstr("1500")
    raw = _raw_headers(copy)
    assert raw["x-first-death-reason"] == _longstr("expired")
    assert raw["x-last-death-queue"] == _longstr("work")


def test_no_original_expiration_without_an_expiration_property() -> None:
    copy, _ = dead_letter_copy(_message(), MAXLEN, "work", "dlx", None, T1)
    [death] = copy.headers["x-death"]
    assert "original-expiration" not in death
    assert "original-expiration" not in _raw_deaths(copy)[0]


def test_dead_letter_routing_key_replaces_the_key_but_not_the_recorded_one() -> None:
    copy, _ = dead_letter_copy(_message(), REJECTED, "work", "dlx", "parked", T1)
    assert copy.routing_key == "parked"
    assert copy.headers["x-death"][0]["routing-keys"] == ["order.created"]


def test_other_headers_and_properties_keep_their_exact_bytes() -> None:
    # Types that a decode/encode round trip would change: int8, float32, int16 in a table,
    # a byte array, a decimal, an unsigned 64-bit int.
    kept = [("tiny", b"b\x05"), ("ratio", b"f" + struct.pack(">f", 0.5)),
            ("nested", b"F" + build_table([("n", b"s\x00\x07")])),
            ("blob", b"x\x00\x00\x00\x02\x00\xff"), ("price", b"D\x02\x00\x00\x04\xd2"),
            ("big", b"L" + struct.pack(">Q", 2**63 + 1))]
    original = _message(headers=kept, expiration="100")
    copy, _ = dead_letter_copy(original, EXPIRED, "work", "dlx", None, T1)
    raw = _raw_headers(copy)
    assert {key: raw[key] for key, _ in kept} == dict(kept)
    before, after = property_fields(original.properties), property_fields(copy.properties)
    for flag in (CONTENT_TYPE, DELIVERY_MODE, PRIORITY, MESSAGE_ID):
        assert after[flag] == before[flag]
    assert (copy.delivery_mode, copy.priority) == (2, 3)


# -- later deaths ------------------------------------------------------------------------


def test_death_in_another_queue_is_prepended_and_first_death_headers_stay() -> None:
    first, _ = dead_letter_copy(_message(expiration="10"), EXPIRED, "work", "dlx", None, T1)
    second, history = dead_letter_copy(first, REJECTED, "retry", "dlx2", None, T2)
    assert [(d["queue"], d["reason"], d["count"]) for d in second.headers["x-death"]] == [
        ("retry", "rejected", 1), ("work", "expired", 1)]
    newest = second.headers["x-death"][0]
    assert newest["exchange"] == "dlx"  # where the copy was published before it died again
    assert newest["time"] == T2
    assert "original-expiration" not in newest  # the first copy had its expiration dropped
    assert history == second.headers["x-death"]
    raw_first, raw_second = _raw_headers(first), _raw_headers(second)
    for key in ("x-first-death-reason", "x-first-death-queue", "x-first-death-exchange"):
        assert raw_second[key] == raw_first[key]
    headers = second.headers
    assert (headers["x-last-death-reason"], headers["x-last-death-queue"],
            headers["x-last-death-exchange"]) == ("rejected", "retry", "dlx")


def test_repeated_death_increments_count_and_moves_the_entry_to_the_front() -> None:
    message = _message(expiration="10")
    message, _ = dead_letter_copy(message, EXPIRED, "work", "dlx", None, T1)
    message, _ = dead_letter_copy(message, EXPIRED, "wait", "back", None, T2)
    message, history = dead_letter_copy(message, EXPIRED, "work", "dlx", None, T3)
    deaths = message.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        ("work", "expired", 2), ("wait", "expired", 1)]
    # RabbitMQ keeps the entry's other fields from the first death in that queue.
    assert deaths[0]["time"] == T1
    assert deaths[0]["exchange"] == "orders"
    assert deaths[0]["original-expiration"] == "10"
    assert _raw_deaths(message)[0]["count"] == b"l" + struct.pack(">q", 2)
    assert history == deaths
    assert message.headers["x-first-death-queue"] == "work"
    assert message.headers["x-last-death-exchange"] == "back"


def test_same_queue_with_another_reason_is_a_separate_entry() -> None:
    message, _ = dead_letter_copy(_message(), REJECTED, "work", "dlx", None, T1)
    message, _ = dead_letter_copy(message, DELIVERY_LIMIT, "work", "dlx", None, T2)
    assert [(d["reason"], d["count"]) for d in message.headers["x-death"]] == [
        ("delivery_limit", 1), ("rejected", 1)]


def test_record_death_sets_first_death_headers_only_the_first_time() -> None:
    updates, history = record_death(_message(), EXPIRED, "work", T1)
    assert set(updates) == {"x-death", "x-first-death-reason", "x-first-death-queue",
                            "x-first-death-exchange", "x-last-death-reason",
                            "x-last-death-queue", "x-last-death-exchange"}
    assert [d["queue"] for d in history] == ["work"]
    copy = _message().edited(headers=updates, drop_expiration=True)
    updates, history = record_death(copy, MAXLEN, "other", T2)
    assert set(updates) == {"x-death", "x-last-death-reason", "x-last-death-queue",
                            "x-last-death-exchange"}
    assert [(d["queue"], d["reason"]) for d in history] == [("other", "maxlen"),
                                                          ("work", "expired")]


def test_earlier_deaths_with_unexpected_value_types_are_carried_over() -> None:
    # Clients that re-publish a dead letter may turn x-death values into strings
    # (rabbitmq-server#767). RabbitMQ passes the tables it does not update through unchanged;
    # re-encoding them with fixed types raised ValueError on time "yesterday" (the dead
    # letter lost, inside a Scheduler callback) or retyped them ("1" -> long, a string
    # routing key -> an array of its characters).
    earlier = [("queue", _longstr("other")), ("reason", _longstr("expired")),
               ("count", _longstr("1")), ("time", _longstr("yesterday")),
               ("routing-keys", _longstr("order.created"))]
    table = b"F" + build_table(earlier)
    original = _message(headers=[("x-death", b"A" + struct.pack(">I", len(table)) + table)])
    copy, _ = dead_letter_copy(original, EXPIRED, "work", "dlx", None, T1)
    assert [d["queue"] for d in copy.headers["x-death"]] == ["work", "other"]
    assert _raw_deaths(copy)[1] == dict(earlier)


# -- cycles ------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "history", "reason", "expected"), [
    pytest.param("a", [_death("a", "expired")], "expired", True, id="ttl-back-to-itself"),
    pytest.param("b", [_death("a", "expired")], "expired", False, id="new-queue"),
    pytest.param("a", [_death("b", "expired"), _death("a", "maxlen")], "expired", True,
                 id="automatic-two-queue-cycle"),
    pytest.param("a", [_death("b", "expired"), _death("a", "rejected")], "expired", False,
                 id="reject-in-the-target-death"),
    pytest.param("a", [_death("b", "expired"), _death("c", "rejected"), _death("a", "expired")],
                 "expired", False, id="reject-inside-the-cycle"),
    pytest.param("a", [_death("b", "expired"), _death("a", "expired"), _death("c", "rejected")],
                 "expired", True, id="reject-older-than-the-cycle"),
    pytest.param("a", [_death("a", "rejected")], "rejected", False, id="rejected-never-cycles"),
    pytest.param("a", [_death("b", "expired"), _death("a", "expired")], "rejected", False,
                 id="rejected-reason-wins"),
    pytest.param("a", [], "expired", False, id="no-history"),
])
def test_is_cycle(target: str, history: list[dict[str, Any]], reason: str,
                  expected: bool) -> None:
    assert is_cycle(target, history, reason) is expected


def test_is_cycle_on_histories_built_by_dead_letter_copy() -> None:
    message = _message(expiration="5")
    message, history = dead_letter_copy(message, EXPIRED, "work", "dlx", None, T1)
    assert is_cycle("work", history, EXPIRED)  # a TTL queue dead-lettering into itself
    assert not is_cycle("parking", history, EXPIRED)
    message, history = dead_letter_copy(message, REJECTED, "parking", "dlx", None, T2)
    assert not is_cycle("work", history, REJECTED)  # the retry pattern is allowed
    message, history = dead_letter_copy(message, EXPIRED, "work", "dlx", None, T3)
    # work (expired, count 2) is now the newest death: back into work is a cycle again.
    assert is_cycle("work", history, EXPIRED)
    # parking's death was a rejection, and it sits between work and parking: not automatic.
    assert not is_cycle("parking", history, EXPIRED)
