"""Validation and equivalence of queue and exchange arguments, as RabbitMQ checks them.

A declare with a bad ``x-`` argument is refused with 406 before anything is created; a
redeclare whose arguments differ from the existing queue's, for the arguments RabbitMQ
compares, is refused with 406 "inequivalent arg". Unknown arguments are accepted and ignored,
as RabbitMQ does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leveret.errors import PreconditionFailed

_OVERFLOW = ("drop-head", "reject-publish", "reject-publish-dlx")
_QUEUE_TYPES = ("classic", "quorum")
_QUEUE_MODES = ("default", "lazy")


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _not_integer(value: Any) -> str:
    return f'"expected integer, got {_type_name(value)}"'


def _non_negative(value: Any) -> str | None:
    number = _integer(value)
    if number is None:
        return _not_integer(value)
    return None if number >= 0 else f"{{value_negative,{number}}}"


def _positive(value: Any) -> str | None:
    number = _integer(value)
    if number is None:
        return _not_integer(value)
    if number == 0:
        return f"{{value_zero,{number}}}"
    return None if number > 0 else f"{{value_negative,{number}}}"


def _priority(value: Any) -> str | None:
    problem = _non_negative(value)
    if problem is None and value > 255:
        return f"{{max_value_exceeded,{value}}}"
    return problem


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else _WRONG_TYPE


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{{unacceptable_type,{_type_name(value)}}}"


def _overflow(value: Any) -> str | None:
    return None if value in _OVERFLOW else "invalid_overflow"


def _one_of(choices: tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"\"unsupported {what} '{value}'\""

    return check


# A string argument of another type gets a message of its own shape in RabbitMQ.
_WRONG_TYPE = "wrong type"


# The arguments RabbitMQ validates at declare and compares on redeclare (rabbit_amqqueue).
QUEUE_ARGUMENTS: dict[str, Callable[[Any], str | None]] = {
    "x-expires": _positive,
    "x-message-ttl": _non_negative,
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _string,
    "x-max-length": _non_negative,
    "x-max-length-bytes": _non_negative,
    "x-max-priority": _priority,
    "x-overflow": _overflow,
    "x-queue-mode": _one_of(_QUEUE_MODES, "queue mode"),
    "x-queue-type": _one_of(_QUEUE_TYPES, "queue type"),
    "x-single-active-consumer": _boolean,
    "x-delivery-limit": _non_negative,
    "x-consumer-timeout": _positive,
    "x-message-deduplication": _boolean,
    "x-cache-ttl": _non_negative,
    "x-cache-size": _positive,
}

# Policy keys (RabbitMQ's names) and the queue argument each stands for. For the limits, the
# smaller of a policy's and an argument's value applies; otherwise the argument wins.
POLICY_KEYS = {
    "message-ttl": "x-message-ttl", "expires": "x-expires",
    "max-length": "x-max-length", "max-length-bytes": "x-max-length-bytes",
    "delivery-limit": "x-delivery-limit", "dead-letter-exchange": "x-dead-letter-exchange",
    "dead-letter-routing-key": "x-dead-letter-routing-key", "overflow": "x-overflow",
    "consumer-timeout": "x-consumer-timeout",
}
_SMALLER_WINS = {"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                 "x-delivery-limit"}


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What a queue's arguments (and the policy that applies to it) ask of it."""

    message_ttl: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    max_priority: int = 0
    delivery_limit: int | None = None
    single_active_consumer: bool = False
    expires: int | None = None
    consumer_timeout: int | None = None
    deduplication: bool = False
    cache_ttl: int | None = None
    cache_size: int | None = None

    @classmethod
    def resolve(cls, arguments: Mapping[str, Any],
                policy: Mapping[str, Any] | None = None) -> QueueSettings:
        merged = dict(arguments)
        for key, value in (policy or {}).items():
            argument = POLICY_KEYS.get(key)
            if argument is None:
                continue
            if argument not in merged:
                merged[argument] = value
            elif argument in _SMALLER_WINS and isinstance(value, int):
                merged[argument] = min(merged[argument], value)

        def number(key: str) -> int | None:
            value = merged.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(key: str) -> str | None:
            value = merged.get(key)
            return value if isinstance(value, str) else None

        return cls(
            message_ttl=number("x-message-ttl"),
            dead_letter_exchange=text("x-dead-letter-exchange"),
            dead_letter_routing_key=text("x-dead-letter-routing-key"),
            max_length=number("x-max-length"),
            max_length_bytes=number("x-max-length-bytes"),
            overflow=text("x-overflow") or "drop-head",
            max_priority=number("x-max-priority") or 0,
            delivery_limit=number("x-delivery-limit"),
            single_active_consumer=merged.get("x-single-active-consumer") is True,
            expires=number("x-expires"),
            consumer_timeout=number("x-consumer-timeout"),
            deduplication=merged.get("x-message-deduplication") is True,
            cache_ttl=number("x-cache-ttl"),
            cache_size=number("x-cache-size"),
        )

    @property
    def limited(self) -> bool:
        return self.max_length is not None or self.max_length_bytes is not None

    @property
    def plain(self) -> bool:
        """Nothing but FIFO delivery: the queue may take its fastest path."""
        return (self.message_ttl is None and not self.limited and not self.deduplication
                and self.delivery_limit is None)


def validate_queue_arguments(
    name: str, vhost: str, arguments: Mapping[str, Any], *, durable: bool, exclusive: bool,
    auto_delete: bool,
) -> None:
    """Raise PreconditionFailed for the first invalid argument, with RabbitMQ's wording."""
    for key, check in QUEUE_ARGUMENTS.items():
        if key in arguments:
            problem = check(arguments[key])
            if problem == _WRONG_TYPE:
                raise PreconditionFailed(
                    f"invalid type '{_type_name(arguments[key])}' for arg '{key}' in queue "
                    f"'{name}' in vhost '{vhost}'"
                )
            if problem is not None:
                raise PreconditionFailed(
                    f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {problem}"
                )
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise PreconditionFailed(
            f"invalid arg 'x-dead-letter-routing-key' for queue '{name}' in vhost '{vhost}': "
            "routing_key_but_no_dlx_defined"
        )
    if arguments.get("x-queue-type") == "quorum" and (not durable or exclusive or auto_delete):
        prop = "non-durable" if not durable else "exclusive-owner" if exclusive else "auto-delete"
        raise PreconditionFailed(
            f"invalid property '{prop}' for queue '{name}' in vhost '{vhost}'"
        )


def assert_queue_equivalent(
    name: str, vhost: str, current: Mapping[str, Any], received: Mapping[str, Any]
) -> None:
    """Raise PreconditionFailed if a redeclare's arguments differ from the queue's."""
    for key in QUEUE_ARGUMENTS:
        old, new = current.get(key), received.get(key)
        if key == "x-queue-type":
            old, new = old or "classic", new or "classic"
        if not _same(old, new):
            raise PreconditionFailed(
                f"inequivalent arg '{key}' for queue '{name}' in vhost '{vhost}': "
                f"{_received_but_current(new, old)}"
            )


def assert_exchange_equivalent(
    name: str, vhost: str, current: Mapping[str, Any], received: Mapping[str, Any]
) -> None:
    old, new = current.get("alternate-exchange"), received.get("alternate-exchange")
    if not _same(old, new):
        raise PreconditionFailed(
            f"inequivalent arg 'alternate-exchange' for exchange '{name}' in vhost '{vhost}': "
            f"{_received_but_current(new, old)}"
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _received_but_current(new: Any, old: Any) -> str:
    # RabbitMQ names the types only when one side is missing.
    if new is not None and old is not None:
        return f"received '{_show(new)}' but current is '{_show(old)}'"
    return f"received {_describe(new)} but current is {_describe(old)}"


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value '{_show(value)}' of type '{_type_name(value)}'"


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _type_name(value: Any) -> str:
    # RabbitMQ's names for AMQP field types, as they appear in its error messages.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long" if not -(2**31) <= value < 2**31 else "signedint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, bytes):
        return "bytearray"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class Policy:
    """A RabbitMQ-style policy: settings for the queues whose name matches ``pattern``."""

    name: str
    pattern: str
    definition: Mapping[str, Any]
    vhost: str = "/"
    priority: int = 0
    apply_to: str = "queues"

    def matches(self, vhost: str, queue: str) -> bool:
        return (self.vhost == vhost and self.apply_to in ("queues", "all")
                and re.search(self.pattern, queue) is not None)


def policy_for(policies: Iterable[Policy], vhost: str, queue: str) -> Policy | None:
    """The highest-priority policy that applies to a queue (RabbitMQ applies one)."""
    found = [p for p in policies if p.matches(vhost, queue)]
    return max(found, key=lambda p: p.priority) if found else None
