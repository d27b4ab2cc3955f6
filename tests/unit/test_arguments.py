"""Unit tests for leveret.core.arguments: queue argument validation, through VHost.declare_queue.

Expected texts are RabbitMQ's: "invalid arg '<key>' for queue '<name>' in vhost '<vhost>':
<reason>" with the reason printed as Erlang terms (rabbit_amqqueue:check_*_arg/2).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from leveret.core.vhost import VHost
from leveret.errors import PreconditionFailed

PREFIX = "invalid arg '{key}' for queue 'q' in vhost '/': "

INVALID = [
    pytest.param("x-message-ttl", -1, "{value_negative,-1}", id="ttl-negative"),
    pytest.param("x-message-ttl", "abc", '"expected integer, got longstr"', id="ttl-string"),
    pytest.param("x-message-ttl", 1.5, '"expected integer, got double"', id="ttl-float"),
    pytest.param("x-message-ttl", True, '"expected integer, got bool"', id="ttl-bool"),
    pytest.param("x-expires", 0, "{value_zero,0}", id="expires-zero"),
    pytest.param("x-expires", -5, "{value_negative,-5}", id="expires-negative"),
    pytest.param("x-max-length", -1, "{value_negative,-1}", id="max-length-negative"),
    pytest.param("x-max-length-bytes", "1", '"expected integer, got longstr"', id="bytes-string"),
    pytest.param("x-max-priority", -1, "{value_negative,-1}", id="priority-negative"),
    pytest.param("x-single-active-consumer", 1, "{unacceptable_type,signedint}",
                 id="sac-int"),
    pytest.param("x-overflow", 1, "invalid_overflow", id="overflow-int"),
]


@pytest.mark.parametrize(("key", "value", "reason"), INVALID)
def test_invalid_queue_argument(key: str, value: Any, reason: str) -> None:
    vhost = VHost("/")
    with pytest.raises(PreconditionFailed) as caught:
        vhost.declare_queue("q", arguments={key: value})
    assert caught.value.text == PREFIX.format(key=key) + reason
    assert caught.value.reply_code == 406
    assert vhost.find_queue("q") is None  # nothing is created


def test_max_priority_above_255() -> None:
    # rabbit_amqqueue:check_max_priority_arg/2 -> {error, {max_value_exceeded, Val}}
    with pytest.raises(PreconditionFailed, match=re.escape(
        "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}"
    )):
        VHost("/").declare_queue("q", arguments={"x-max-priority": 256})


def test_unknown_overflow_mode() -> None:
    # rabbit_amqqueue:check_overflow/2 -> {error, invalid_overflow}
    with pytest.raises(PreconditionFailed, match=re.escape(
        "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"
    )):
        VHost("/").declare_queue("q", arguments={"x-overflow": "drop-tail"})


def test_dead_letter_routing_key_without_exchange() -> None:
    with pytest.raises(PreconditionFailed, match=re.escape(
        "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': "
        "routing_key_but_no_dlx_defined"
    )):
        VHost("/").declare_queue("q", arguments={"x-dead-letter-routing-key": "rk"})


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-message-ttl": 0},
        {"x-expires": 1},
        {"x-max-priority": 255},
        {"x-max-priority": 0},
        {"x-overflow": "reject-publish-dlx"},
        {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk"},
        {"x-single-active-consumer": True},
        {"x-queue-mode": "lazy"},
        {"x-queue-type": "classic"},
        {"x-message-ttl": 2**40},  # a long is as good as a signedint
        {"x-unknown": object()},  # unknown arguments are ignored, as RabbitMQ does
    ],
)
def test_valid_queue_arguments(arguments: dict[str, Any]) -> None:
    queue = VHost("/").declare_queue("q", arguments=arguments)
    assert queue.arguments == arguments


@pytest.mark.parametrize(
    ("options", "prop"),
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
)
def test_quorum_queue_properties(options: dict[str, Any], prop: str) -> None:
    # rabbit_queue_type_util: "invalid property 'non-durable' for queue 'q' in vhost '/'"
    with pytest.raises(PreconditionFailed, match=re.escape(
        f"invalid property '{prop}' for queue 'q' in vhost '/'"
    )):
        VHost("/").declare_queue("q", object(), arguments={"x-queue-type": "quorum"},
                                 **options)


def test_quorum_queue_declares_when_durable() -> None:
    queue = VHost("/").declare_queue("q", durable=True, arguments={"x-queue-type": "quorum"})
    assert queue.durable


def test_string_argument_of_another_type() -> None:
    # RabbitMQ 3.10 words this one differently (probed).
    with pytest.raises(PreconditionFailed, match=re.escape(
        "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
    )):
        VHost("/").declare_queue("q", arguments={"x-dead-letter-exchange": 5})
