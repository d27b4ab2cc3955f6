"""Exchanges and their routing: default, direct, fanout, topic and headers.

An exchange maps a message to destinations: queues, and other exchanges (exchange-to-exchange
bindings; `core.vhost` follows those and drops cycles). Routing is the hot path of publish, so
each type keeps the index that answers its question in one lookup: direct a dict by key, fanout
a list, topic a trie of words with a result cache; headers has no index to keep and matches
each binding in turn, as RabbitMQ does.

Nothing here knows about channels, sockets or storage.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from leveret.core.tables import FieldTable
from leveret.errors import PreconditionFailed

if TYPE_CHECKING:
    from leveret.core.message import Message
    from leveret.core.queue import Queue


@dataclass(frozen=True, slots=True)
class Binding:
    """One binding: its identity is (destination, routing key, arguments), as in RabbitMQ."""

    destination: Queue | Exchange
    routing_key: str
    arguments: FieldTable
    arguments_key: Hashable

    @classmethod
    def make(
        cls, destination: Queue | Exchange, routing_key: str, arguments: FieldTable
    ) -> Binding:
        return cls(destination, routing_key, arguments, _frozen(arguments))

    @property
    def identity(self) -> tuple[int, str, Hashable]:
        return id(self.destination), self.routing_key, self.arguments_key


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for a decoded field value: tables compare sorted by key, as in
    RabbitMQ, and each scalar keeps its type so that true and 1 stay different bindings."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return ("array", *(_frozen(item) for item in value))
    return (type(value).__name__, value)


class Exchange:
    """Base class: the bindings bookkeeping every type shares."""

    type_name: ClassVar[str] = ""
    kind: ClassVar[str] = "exchange"

    def __init__(
        self,
        name: str,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: FieldTable = dict(arguments or {})
        self._bindings: dict[tuple[int, str, Hashable], Binding] = {}
        self.exchange_bindings = 0  # bindings to other exchanges: routing must follow them
        self.deleted = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def alternate_exchange(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None

    def bindings(self) -> Iterator[Binding]:
        return iter(list(self._bindings.values()))

    @property
    def has_bindings(self) -> bool:
        return bool(self._bindings)

    def validate_binding(self, arguments: Mapping[str, Any]) -> None:
        """Raise PreconditionFailed if the binding arguments are not valid for this type."""

    def bind(self, binding: Binding) -> bool:
        """Add a binding; return False if an identical one exists."""
        if binding.identity in self._bindings:
            return False
        self._bindings[binding.identity] = binding
        if binding.destination.kind == "exchange":
            self.exchange_bindings += 1
        self._added(binding)
        return True

    def unbind(self, binding: Binding) -> bool:
        """Remove a binding; return False if there was none."""
        found = self._bindings.pop(binding.identity, None)
        if found is None:
            return False
        if found.destination.kind == "exchange":
            self.exchange_bindings -= 1
        self._removed(found)
        return True

    def unbind_destination(self, destination: Queue | Exchange) -> int:
        """Remove every binding to ``destination`` (it is being deleted); return how many."""
        gone = [b for b in self._bindings.values() if b.destination is destination]
        for binding in gone:
            self.unbind(binding)
        return len(gone)

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        raise NotImplementedError

    def _added(self, binding: Binding) -> None:
        """Update the routing index for a new binding."""

    def _removed(self, binding: Binding) -> None:
        """Update the routing index after a binding is removed."""


class DirectExchange(Exchange):
    """Routes to destinations bound with a routing key equal to the message's."""

    type_name = "direct"

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._by_key: dict[str, list[Queue | Exchange]] = {}

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        return self._by_key.get(message.routing_key, ())

    def _added(self, binding: Binding) -> None:
        self._reindex(binding.routing_key)

    def _removed(self, binding: Binding) -> None:
        self._reindex(binding.routing_key)

    def _reindex(self, key: str) -> None:
        # A destination bound twice with the same key (different arguments) gets one copy.
        dests = {id(b.destination): b.destination for b in self._bindings.values()
                 if b.routing_key == key}
        if dests:
            self._by_key[key] = list(dests.values())
        else:
            self._by_key.pop(key, None)


class DefaultExchange(Exchange):
    """The nameless exchange: routes to the queue named by the routing key; takes no bindings."""

    type_name = "direct"

    def __init__(self, queues: Mapping[str, Queue]) -> None:
        super().__init__("", durable=True)
        self._queues = queues

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        queue = self._queues.get(message.routing_key)
        return (queue,) if queue is not None else ()


class FanoutExchange(Exchange):
    """Routes to every destination, whatever the routing key."""

    type_name = "fanout"

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._dests: list[Queue | Exchange] = []

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        return self._dests

    def _added(self, binding: Binding) -> None:
        self._reindex()

    def _removed(self, binding: Binding) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self._dests = list({id(b.destination): b.destination
                            for b in self._bindings.values()}.values())


class _TopicNode:
    __slots__ = ("children", "destinations", "is_hash")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _TopicNode] = {}
        self.destinations: dict[int, Queue | Exchange] = {}
        self.is_hash = is_hash  # reached through '#': may absorb any number of words


def split_topic(key: str) -> list[str]:
    """Split a routing key or pattern into words; the empty key has no words (as in RabbitMQ)."""
    return key.split(".") if key else []


def pattern_words(pattern: str) -> list[str]:
    """A pattern's words, with runs of '#' collapsed: "#.#" matches exactly what "#" matches."""
    words: list[str] = []
    for word in split_topic(pattern):
        if not (word == "#" and words and words[-1] == "#"):
            words.append(word)
    return words


class TopicExchange(Exchange):
    """Routes by pattern: words split on '.', '*' matches one word, '#' zero or more.

    Patterns are kept in a trie of words, runs of '#' collapsed. A match visits each (node, word
    position) state at most once, and each visit costs a few dict lookups ('#' is a node that
    may absorb one more word and stay), so the cost is at most nodes x words, never exponential.
    Results are cached per routing key until the next bind or unbind.
    """

    type_name = "topic"
    CACHE_SIZE: ClassVar[int] = 4096

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._root = _TopicNode()
        self._cache: dict[str, tuple[Queue | Exchange, ...]] = {}

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        key = message.routing_key
        found = self._cache.get(key)
        if found is None:
            found = self.match(key)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def match(self, routing_key: str) -> tuple[Queue | Exchange, ...]:
        words = split_topic(routing_key)
        end = len(words)
        out: dict[int, Queue | Exchange] = {}
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_TopicNode, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            children = node.children
            hash_child = children.get("#")
            if hash_child is not None:
                stack.append((hash_child, i))  # '#' matching zero words
            if i == end:
                out.update(node.destinations)
                continue
            if node.is_hash:
                stack.append((node, i + 1))  # '#' absorbing one more word
            child = children.get(words[i])
            if child is not None:
                stack.append((child, i + 1))
            star = children.get("*")
            if star is not None:
                stack.append((star, i + 1))
        return tuple(out.values())

    def _added(self, binding: Binding) -> None:
        node = self._root
        for word in pattern_words(binding.routing_key):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _TopicNode(is_hash=word == "#")
            node = child
        node.destinations[id(binding.destination)] = binding.destination
        self._cache.clear()

    def _removed(self, binding: Binding) -> None:
        path = [self._root]
        words = pattern_words(binding.routing_key)
        for word in words:
            path.append(path[-1].children[word])
        still_bound = any(
            b.destination is binding.destination and pattern_words(b.routing_key) == words
            for b in self._bindings.values()
        )
        if not still_bound:
            del path[-1].destinations[id(binding.destination)]
        # Prune nodes left with nothing below them.
        for depth in range(len(words), 0, -1):
            node = path[depth]
            if node.children or node.destinations:
                break
            del path[depth - 1].children[words[depth - 1]]
        self._cache.clear()


_X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def _same_value(pattern: Any, value: Any) -> bool:
    # Erlang's ==: true is not 1, and a long string equals a byte array with the same bytes.
    if isinstance(pattern, bool) or isinstance(value, bool):
        return isinstance(pattern, bool) and isinstance(value, bool) and pattern == value
    if isinstance(pattern, Decimal) or isinstance(value, Decimal):  # {decimal, Scale, Value}
        return (isinstance(pattern, Decimal) and isinstance(value, Decimal)
                and pattern.as_tuple() == value.as_tuple())
    if isinstance(pattern, str | bytes) and isinstance(value, str | bytes):
        as_bytes = [v.encode() if isinstance(v, str) else v for v in (pattern, value)]
        return as_bytes[0] == as_bytes[1]
    return bool(pattern == value)


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """RabbitMQ's headers-exchange match of binding ``arguments`` against message ``headers``."""
    mode = arguments.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode not in ("any", "any-with-x")
    matched_any = False
    for key, pattern in arguments.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        if key in headers and (pattern is None or _same_value(pattern, headers[key])):
            matched_any = True
            if not want_all:
                return True
        elif want_all:
            return False
    return want_all or matched_any


class HeadersExchange(Exchange):
    """Routes by matching binding arguments against the message's headers table."""

    type_name = "headers"

    def validate_binding(self, arguments: Mapping[str, Any]) -> None:
        if "x-match" not in arguments:
            return
        mode = arguments["x-match"]
        if not isinstance(mode, str):
            raise PreconditionFailed(
                f"Invalid x-match field type {type(mode).__name__} (value {mode!r}); "
                "expected longstr"
            )
        if mode not in _X_MATCH_MODES:
            raise PreconditionFailed(
                f"Invalid x-match field value {mode!r}; "
                "expected all, any, all-with-x, or any-with-x"
            )

    def route(self, message: Message) -> Sequence[Queue | Exchange]:
        if not self._bindings:
            return ()
        headers = message.headers
        return list({
            id(b.destination): b.destination
            for b in self._bindings.values()
            if headers_match(b.arguments, headers)
        }.values())


_ROUTING_TYPES: dict[str, type[Exchange]] = {
    cls.type_name: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}
_DELAYED: dict[str, type[Exchange]] = {
    name: type(f"Delayed{cls.__name__}", (cls,), {"type_name": "x-delayed-message"})
    for name, cls in _ROUTING_TYPES.items()
}


def delayed_message_exchange(name: str, **kwargs: Any) -> Exchange:
    """The plugin's ``x-delayed-message`` type: it routes as its ``x-delayed-type`` does.
    (Leveret delays a message with an ``x-delay`` header through any exchange.)"""
    inner = (kwargs.get("arguments") or {}).get("x-delayed-type")
    cls = _DELAYED.get(inner) if isinstance(inner, str) else None
    if cls is None:
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type")
    return cls(name, **kwargs)


EXCHANGE_TYPES: dict[str, Callable[..., Exchange]] = {
    **_ROUTING_TYPES, "x-delayed-message": delayed_message_exchange,
}
