"""Dead-lettering as RabbitMQ does it: the x-death history, and the cycles that are dropped.

A message that dies in a queue (rejected without requeue, expired, pushed out by a length
limit, or over its delivery limit) is republished to the queue's dead-letter exchange with:

- ``x-death``: an array of tables, newest first, one per (queue, reason) with a ``count`` that
  grows each time the message dies there again, plus ``reason``, ``queue``, ``time``,
  ``exchange``, ``routing-keys`` and, for a per-message TTL, ``original-expiration``;
- ``x-first-death-reason``/``-queue``/``-exchange``, set the first time only;
- ``x-last-death-reason``/``-queue``/``-exchange``, set every time (RabbitMQ 3.13);
- no ``expiration`` property, so a copy does not expire again for the same reason.

A dead-lettered copy that would go back to a queue already in its history, through a cycle
with no rejection in it, is dropped for that queue (RabbitMQ's `is_cycle`): a TTL cycle would
otherwise loop forever. Cycles through a rejection are the retry pattern and are allowed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from leveret.core.message import Message
from leveret.core.tables import Timestamp, encode_value

REJECTED, EXPIRED, MAXLEN, DELIVERY_LIMIT = "rejected", "expired", "maxlen", "delivery_limit"

_LONG = struct.Struct(">q")


def long_value(number: int) -> bytes:
    """A field value of type 'l' (RabbitMQ's "long"), as it uses for counts."""
    return b"l" + _LONG.pack(number)


def _string(text: str) -> bytes:
    raw = text.encode()
    return b"S" + struct.pack(">I", len(raw)) + raw


def deaths(message: Message) -> list[dict[str, Any]]:
    """The message's x-death history, newest first (empty if none or malformed)."""
    history = message.headers.get("x-death")
    if not isinstance(history, list):
        return []
    return [dict(entry) for entry in history if isinstance(entry, Mapping)]


def _encode_death(entry: Mapping[str, Any]) -> bytes:
    """One x-death table, keys sorted as RabbitMQ sorts them, with RabbitMQ's field types."""
    parts = []
    for key in sorted(entry):
        value = entry[key]
        number = isinstance(value, int) and not isinstance(value, bool)
        if key == "count" and number:
            tagged = long_value(value)
        elif key == "time" and number and 0 <= value < 2**64:
            tagged = b"T" + struct.pack(">Q", value)
        elif key == "routing-keys" and isinstance(value, list):
            items = b"".join(_string(k) if isinstance(k, str) else encode_value(k)
                             for k in value)
            tagged = b"A" + struct.pack(">I", len(items)) + items
        elif isinstance(value, str):
            tagged = _string(value)
        else:
            tagged = encode_value(value)
        raw = key.encode()
        parts.append(bytes([len(raw)]) + raw + tagged)
    body = b"".join(parts)
    return b"F" + struct.pack(">I", len(body)) + body


def record_death(message: Message, reason: str, queue: str, now_s: int
                 ) -> tuple[dict[str, bytes | None], list[dict[str, Any]]]:
    """The header updates for a death in ``queue`` and the new history (newest first)."""
    history = deaths(message)
    match = next((i for i, d in enumerate(history)
                  if d.get("queue") == queue and d.get("reason") == reason), None)
    if match is not None:
        entry = dict(history[match])
        count = entry.get("count")
        # Earlier deaths may come from anywhere (another broker, a client): tolerate any type.
        entry["count"] = (count if isinstance(count, int) and not isinstance(count, bool)
                          else 0) + 1
        rest = history[:match] + history[match + 1 :]
    else:
        entry = {"count": 1, "reason": reason, "queue": queue, "time": Timestamp(now_s),
                 "exchange": message.exchange, "routing-keys": [message.routing_key]}
        if message.expiration is not None:
            entry["original-expiration"] = message.expiration
        rest = history
    new_history = [entry, *rest]
    items = b"".join(_encode_death(d) for d in new_history)
    updates: dict[str, bytes | None] = {
        "x-death": b"A" + struct.pack(">I", len(items)) + items,
        "x-last-death-reason": _string(reason),
        "x-last-death-queue": _string(queue),
        "x-last-death-exchange": _string(message.exchange),
    }
    if not history:
        updates["x-first-death-reason"] = _string(reason)
        updates["x-first-death-queue"] = _string(queue)
        updates["x-first-death-exchange"] = _string(message.exchange)
    return updates, new_history


def dead_letter_copy(message: Message, reason: str, queue: str, exchange: str,
                     routing_key: str | None, now_s: int) -> tuple[Message, list[dict[str, Any]]]:
    """The copy republished to the dead-letter ``exchange``, and its death history."""
    updates, history = record_death(message, reason, queue, now_s)
    copy = message.edited(exchange=exchange,
                          routing_key=message.routing_key if routing_key is None else routing_key,
                          headers=updates, drop_expiration=True)
    return copy, history


def is_cycle(queue: str, history: list[dict[str, Any]], reason: str) -> bool:
    """Would republishing into ``queue`` close a cycle with no rejection in it?"""
    if reason == REJECTED:
        return False
    for death in history:  # newest first, up to and including the first death in ``queue``
        if death.get("reason") == REJECTED:
            return False
        if death.get("queue") == queue:
            return True
    return False
