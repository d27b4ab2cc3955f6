"""Unit tests for leveret.core.exchanges: direct, fanout, default, topic and headers routing.

Destinations are real `Queue` objects and messages real `Message` objects; headers travel in a
real properties block (flags 0x2000, then the table). `headers_match` is checked against the
semantics of RabbitMQ's rabbit_exchange_type_headers.erl.
"""

from __future__ import annotations

from typing import Any

import pytest

from leveret.core.exchanges import (
    EXCHANGE_TYPES,
    Binding,
    DefaultExchange,
    DirectExchange,
    Exchange,
    FanoutExchange,
    HeadersExchange,
    TopicExchange,
    headers_match,
    split_topic,
)
from leveret.core.message import Message
from leveret.core.queue import Queue
from leveret.core.tables import encode_table
from leveret.errors import PreconditionFailed


def _msg(routing_key: str = "", headers: dict[str, Any] | None = None) -> Message:
    properties = b"\x00\x00" if headers is None else b"\x20\x00" + encode_table(headers)
    return Message.from_wire("ex", routing_key, properties, b"")


def _bind(exchange: Exchange, dest: Queue | Exchange, key: str = "", **args: Any) -> Binding:
    binding = Binding.make(dest, key, dict(args))
    assert exchange.bind(binding)
    return binding


def _names(dests: Any) -> list[str]:
    return sorted(d.name for d in dests)


# -- direct, fanout, default ----------------------------------------------------------------


def test_direct_routes_by_equal_key_and_dedupes_a_destination() -> None:
    exchange, q1, q2 = DirectExchange("d"), Queue("q1"), Queue("q2")
    first = _bind(exchange, q1, "k")
    second = Binding.make(q1, "k", {"x-other": 1})  # same queue and key, other arguments
    assert exchange.bind(second)
    _bind(exchange, q2, "k")
    _bind(exchange, q2, "other")
    assert _names(exchange.route(_msg("k"))) == ["q1", "q2"]
    assert list(exchange.route(_msg("K"))) == []
    assert exchange.unbind(first)
    assert _names(exchange.route(_msg("k"))) == ["q1", "q2"]  # still bound through `second`
    assert exchange.unbind(second)
    assert _names(exchange.route(_msg("k"))) == ["q2"]


def test_bind_and_unbind_report_duplicates_and_missing() -> None:
    exchange, queue = DirectExchange("d"), Queue("q")
    binding = _bind(exchange, queue, "k", a=1)
    assert not exchange.bind(Binding.make(queue, "k", {"a": 1}))
    assert exchange.unbind(Binding.make(queue, "k", {"a": 1}))  # equal identity, new object
    assert not exchange.unbind(binding)
    assert not exchange.has_bindings


def test_binding_identity_ignores_argument_order() -> None:
    queue = Queue("q")
    a = Binding.make(queue, "k", {"a": 1, "b": "x"})
    b = Binding.make(queue, "k", {"b": "x", "a": 1})
    assert a.identity == b.identity
    assert a.identity != Binding.make(queue, "k", {"a": 2, "b": "x"}).identity
    assert a.identity != Binding.make(Queue("q"), "k", {"a": 1, "b": "x"}).identity


def test_fanout_routes_everywhere_once() -> None:
    exchange, q1, q2 = FanoutExchange("f"), Queue("q1"), Queue("q2")
    _bind(exchange, q1, "a")
    _bind(exchange, q1, "b")
    _bind(exchange, q2, "")
    assert _names(exchange.route(_msg("anything"))) == ["q1", "q2"]
    assert exchange.unbind_destination(q1) == 2
    assert _names(exchange.route(_msg(""))) == ["q2"]


def test_default_exchange_routes_by_queue_name() -> None:
    queues = {"q": Queue("q")}
    exchange = DefaultExchange(queues)
    assert list(exchange.route(_msg("q"))) == [queues["q"]]
    assert list(exchange.route(_msg("missing"))) == []
    queues["late"] = Queue("late")  # the exchange sees the vhost's live mapping
    assert _names(exchange.route(_msg("late"))) == ["late"]
    assert (exchange.name, exchange.type_name, exchange.durable) == ("", "direct", True)


def test_exchange_types_registry() -> None:
    assert {name: cls.__name__ for name, cls in EXCHANGE_TYPES.items()} == {
        "direct": "DirectExchange", "fanout": "FanoutExchange", "topic": "TopicExchange",
        "headers": "HeadersExchange", "x-delayed-message": "delayed_message_exchange",
    }


# -- topic ---------------------------------------------------------------------------------

TOPIC_CASES = [
    ("#", "", True), ("#", "a", True), ("#", "a.b.c", True),
    ("*", "a", True), ("*", "", False), ("*", "a.b", False),
    ("a.#", "a", True), ("a.#", "a.b.c", True), ("a.#", "b.a", False), ("a.#", "ab", False),
    ("#.b", "b", True), ("#.b", "a.b", True), ("#.b", "x.y.b", True), ("#.b", "b.a", False),
    ("a.*.c", "a.b.c", True), ("a.*.c", "a.c", False), ("a.*.c", "a.b.b.c", False),
    ("*.*", "a.b", True), ("*.*", "a", False), ("*.*", "a.b.c", False), ("*.*", ".", True),
    ("", "", True), ("", "a", False), ("a", "", False),
    ("a.*.b", "a..b", True), ("a..b", "a..b", True), ("a.b", "a..b", False),
    ("a.#.b", "a.b", True), ("a.#.b", "a.x.y.b", True), ("a.#.b", "a.x.y", False),
    ("#.*", "a", True), ("#.*", "", False), ("*.#", "a.b", True), ("*.#", "", False),
    ("#.#", "", True), ("a.#.#", "a", True), ("#.a.#", "b.a.c", True), ("#.a.#", "b.c", False),
    ("a.b", "a.b", True), ("a.b", "a.bc", False), ("A", "a", False),
]


@pytest.mark.parametrize(("pattern", "key", "matches"), TOPIC_CASES)
def test_topic_pattern_table(pattern: str, key: str, matches: bool) -> None:
    exchange, queue = TopicExchange("t"), Queue("q")
    _bind(exchange, queue, pattern)
    assert list(exchange.route(_msg(key))) == ([queue] if matches else [])


def test_split_topic() -> None:
    assert split_topic("") == []
    assert split_topic("a..b") == ["a", "", "b"]
    assert split_topic(".") == ["", ""]


def test_topic_many_hashes_against_long_keys_finish() -> None:
    exchange, hashes, spread = TopicExchange("t"), Queue("hashes"), Queue("spread")
    _bind(exchange, hashes, "#.#.#.#.#.#.#.#")
    _bind(exchange, spread, "a.#.b.#.c.#.d.#.z")
    long_key = ".".join(["a", "b", "c", "d"] * 50)  # 200 words, no final "z"
    assert _names(exchange.match(long_key)) == ["hashes"]
    assert _names(exchange.match(long_key + ".z")) == ["hashes", "spread"]


def test_topic_destination_matching_several_patterns_is_routed_once() -> None:
    exchange, queue = TopicExchange("t"), Queue("q")
    for pattern in ("#", "a.*", "a.b", "*.b"):
        _bind(exchange, queue, pattern)
    assert list(exchange.route(_msg("a.b"))) == [queue]


def test_topic_unbind_updates_results_and_prunes_the_trie() -> None:
    exchange, q1, q2 = TopicExchange("t"), Queue("q1"), Queue("q2")
    b1 = _bind(exchange, q1, "a.b.c")
    b2 = _bind(exchange, q2, "a.b.#")
    b3 = _bind(exchange, q1, "a.b.c", x=1)  # same pattern and queue, other arguments
    assert _names(exchange.route(_msg("a.b.c"))) == ["q1", "q2"]
    exchange.unbind(b1)
    assert _names(exchange.route(_msg("a.b.c"))) == ["q1", "q2"]
    exchange.unbind(b3)
    assert _names(exchange.route(_msg("a.b.c"))) == ["q2"]
    exchange.unbind(b2)
    assert list(exchange.route(_msg("a.b.c"))) == []
    # White-box: with no bindings left, no trie node may remain below the root.
    assert exchange._root.children == {}
    assert exchange._root.destinations == {}


def test_topic_prune_keeps_shared_prefixes() -> None:
    exchange, q1, q2 = TopicExchange("t"), Queue("q1"), Queue("q2")
    _bind(exchange, q1, "a.b")
    b2 = _bind(exchange, q2, "a.b.c.d")
    exchange.unbind(b2)
    assert _names(exchange.route(_msg("a.b"))) == ["q1"]
    assert list(exchange._root.children["a"].children["b"].children) == []


def test_topic_cache_is_invalidated_by_bind_and_unbind() -> None:
    exchange, queue = TopicExchange("t"), Queue("q")
    assert list(exchange.route(_msg("a.b"))) == []  # caches the empty result
    binding = _bind(exchange, queue, "a.*")
    assert list(exchange.route(_msg("a.b"))) == [queue]
    exchange.unbind(binding)
    assert list(exchange.route(_msg("a.b"))) == []


def test_topic_cache_stays_correct_past_its_size() -> None:
    exchange, queue = TopicExchange("t"), Queue("q")
    _bind(exchange, queue, "k.*")
    for i in range(TopicExchange.CACHE_SIZE + 10):
        assert list(exchange.route(_msg(f"k.{i}"))) == [queue]
    assert list(exchange.route(_msg("k.0.extra"))) == []


def test_unbind_destination_removes_every_topic_binding() -> None:
    exchange, queue, other = TopicExchange("t"), Queue("q"), Queue("other")
    _bind(exchange, queue, "a.#")
    _bind(exchange, queue, "*.b")
    _bind(exchange, other, "a.b")
    assert exchange.unbind_destination(queue) == 2
    assert _names(exchange.route(_msg("a.b"))) == ["other"]


# -- headers ---------------------------------------------------------------------------------

HEADERS_CASES = [
    # (binding arguments, message headers, matches)
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 0}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
    ({"a": 1, "b": "x"}, {"a": 1}, False),  # x-match defaults to all
    ({"a": 1}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"b": "x"}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "y"}, False),
    ({"x-match": "any", "a": 1}, {}, False),
    # x- keys are ignored unless the mode is *-with-x
    ({"x-match": "all", "a": 1, "x-k": "v"}, {"a": 1}, True),
    ({"x-match": "any", "x-k": "v"}, {"x-k": "v"}, False),
    ({"x-match": "all-with-x", "a": 1, "x-k": "v"}, {"a": 1}, False),
    ({"x-match": "all-with-x", "a": 1, "x-k": "v"}, {"a": 1, "x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v"}, {"x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v"}, {"x-k": "w"}, False),
    ({"x-match": "all-with-x"}, {"x-match": "any"}, True),  # x-match itself never compared
    # void pattern: presence only
    ({"x-match": "all", "a": None}, {"a": "anything"}, True),
    ({"x-match": "all", "a": None}, {"b": 1}, False),
    ({"x-match": "any", "a": None, "b": 2}, {"a": 0}, True),
    ({"x-match": "all", "a": 1}, {"a": None}, False),
    # Erlang ==: booleans are not integers; longstr equals a byte array with the same bytes
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": True}, False),
    ({"a": False}, {"a": 0}, False),
    ({"a": True}, {"a": True}, True),
    ({"a": "caf\u00e9"}, {"a": "caf\u00e9".encode()}, True),
    ({"a": b"raw"}, {"a": "raw"}, True),
    ({"a": "raw"}, {"a": b"RAW"}, False),
    ({"a": 1}, {"a": 1.0}, True),  # 1 == 1.0 in Erlang too
    ({"a": 1}, {"a": "1"}, False),
    # no non-x keys: 'all' matches anything, 'any' nothing
    ({"x-match": "all"}, {}, True),
    ({}, {"a": 1}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "any", "x-k": 1}, {"x-k": 1}, False),
    ({"x-match": "all", "x-k": 1}, {}, True),
]


@pytest.mark.parametrize(("arguments", "headers", "matches"), HEADERS_CASES)
def test_headers_match(arguments: dict[str, Any], headers: dict[str, Any], matches: bool) -> None:
    assert headers_match(arguments, headers) is matches


@pytest.mark.parametrize(("arguments", "headers", "matches"), HEADERS_CASES)
def test_headers_exchange_routes_through_the_wire_headers(
    arguments: dict[str, Any], headers: dict[str, Any], matches: bool
) -> None:
    exchange, queue = HeadersExchange("h"), Queue("q")
    exchange.validate_binding(arguments)
    _bind(exchange, queue, "ignored", **arguments)
    assert list(exchange.route(_msg("rk", headers))) == ([queue] if matches else [])


def test_headers_exchange_message_without_headers() -> None:
    exchange, everything, needs_a = HeadersExchange("h"), Queue("all"), Queue("a")
    _bind(exchange, everything)
    _bind(exchange, needs_a, a=None)
    assert _names(exchange.route(_msg("rk"))) == ["all"]


def test_headers_exchange_dedupes_a_queue_bound_twice() -> None:
    exchange, queue = HeadersExchange("h"), Queue("q")
    _bind(exchange, queue, a=1)
    _bind(exchange, queue, b=2)
    assert list(exchange.route(_msg("", {"a": 1, "b": 2}))) == [queue]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"x-match": 1}, "Invalid x-match field type .*expected longstr"),
        ({"x-match": b"all"}, "Invalid x-match field type .*expected longstr"),
        ({"x-match": "some"}, "Invalid x-match field value 'some'; expected all, any, "
                              "all-with-x, or any-with-x"),
        ({"x-match": "ALL"}, "Invalid x-match field value 'ALL'"),
    ],
)
def test_headers_validate_binding_errors(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(PreconditionFailed, match=message) as caught:
        HeadersExchange("h").validate_binding(arguments)
    assert caught.value.reply_code == 406


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_headers_validate_binding_accepts_the_four_modes(mode: str) -> None:
    HeadersExchange("h").validate_binding({"x-match": mode, "a": 1})
    HeadersExchange("h").validate_binding({"a": 1})


def test_other_exchange_types_accept_any_binding_arguments() -> None:
    for cls in (DirectExchange, FanoutExchange, TopicExchange):
        cls("e").validate_binding({"x-match": 1})


def test_alternate_exchange_argument() -> None:
    assert DirectExchange("d", arguments={"alternate-exchange": "ae"}).alternate_exchange == "ae"
    assert DirectExchange("d", arguments={"alternate-exchange": 1}).alternate_exchange is None
    assert DirectExchange("d").alternate_exchange is None


def test_binding_arguments_beyond_int64_are_a_valid_identity() -> None:
    # Regression (found by the fuzz tests): a 'L' argument >= 2**63 could not be re-encoded
    # to build the binding's identity and surfaced as 541 INTERNAL_ERROR.
    exchange = DirectExchange("d")
    queue = Queue("q")
    assert exchange.bind(Binding.make(queue, "k", {"a": 2**64 - 1, "nested": [2**63]}))
    assert not exchange.bind(Binding.make(queue, "k", {"nested": [2**63], "a": 2**64 - 1}))
    assert exchange.bind(Binding.make(queue, "k", {"a": True}))
    assert exchange.bind(Binding.make(queue, "k", {"a": 1}))  # true and 1 are not the same
    assert exchange.unbind(Binding.make(queue, "k", {"a": 2**64 - 1, "nested": [2**63]}))


def test_runs_of_hash_collapse_and_unbind_keeps_the_equivalent_binding() -> None:
    exchange = TopicExchange("t")
    queue = Queue("q")
    exchange.bind(Binding.make(queue, "#.#.a.#", {}))
    exchange.bind(Binding.make(queue, "#.a.#", {}))
    assert exchange.match("a") == (queue,)
    assert exchange.match("x.y.a.z") == (queue,)
    assert exchange.match("x.y") == ()
    exchange.unbind(Binding.make(queue, "#.#.a.#", {}))
    assert exchange.match("x.a") == (queue,)  # "#.a.#" still routes
    exchange.unbind(Binding.make(queue, "#.a.#", {}))
    assert exchange.match("x.a") == ()


def test_many_hash_patterns_against_a_long_key_match_correctly() -> None:
    # Regression: this shape kept the event loop busy for seconds before '#' became a
    # self-looping trie state; now each (node, position) is visited once.
    exchange = TopicExchange("t")
    queues = [Queue(f"q{i}") for i in range(16)]
    for i, queue in enumerate(queues):
        pattern = ".".join("*" if word == i else "#" for word in range(127))
        exchange.bind(Binding.make(queue, pattern, {}))
    assert set(exchange.match(".".join(["a"] * 128))) == set(queues)
    assert exchange.match("") == ()
