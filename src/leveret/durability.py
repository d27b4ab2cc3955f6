"""Durable definitions: what of the broker's state is written to definitions.json, and how a
broker is rebuilt from a data directory at start.

definitions.json (format version 1) holds the vhosts, the users, the durable exchanges that
were declared (not the predeclared ones) and the bindings whose both ends are durable. Field
tables (arguments) are stored as their AMQP encoding in base64, so every type survives exactly.
Durable queues are not in it: each has its own directory with a queue.json (`store.disk`), so
that a queue's messages and its declaration live and die together.

This module sits above `core` and `store` and is the only place that knows both.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from leveret.amqp.auth import Permission, User
from leveret.core.queue import Queue
from leveret.core.tables import FieldTable, decode_table, encode_table
from leveret.core.vhost import PREDECLARED, VHost
from leveret.store.disk import DiskEngine

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SYSTEM_EXCHANGES = {"", "amq.rabbitmq.trace"} | {name for name, _ in PREDECLARED}


def _table(arguments: FieldTable) -> str:
    return base64.b64encode(encode_table(arguments)).decode()


def _untable(text: str) -> FieldTable:
    return decode_table(base64.b64decode(text))[0] if text else {}


def snapshot(vhosts: Mapping[str, VHost], users: Iterable[User]) -> dict[str, Any]:
    """The durable definitions of a running broker, as written to definitions.json."""
    exchanges, bindings = [], []
    for vhost in vhosts.values():
        for exchange in vhost.exchanges.values():
            if exchange.name in _SYSTEM_EXCHANGES or not exchange.durable:
                continue
            exchanges.append({"vhost": vhost.name, "name": exchange.name,
                              "type": exchange.type_name, "auto_delete": exchange.auto_delete,
                              "internal": exchange.internal,
                              "arguments": _table(exchange.arguments)})
        for exchange in vhost.exchanges.values():
            if not exchange.durable:
                continue
            for binding in exchange.bindings():
                dest = binding.destination
                if not dest.durable or (isinstance(dest, Queue) and dest.exclusive):
                    continue
                bindings.append({"vhost": vhost.name, "source": exchange.name,
                                 "destination": dest.name, "destination_type": dest.kind,
                                 "routing_key": binding.routing_key,
                                 "arguments": _table(binding.arguments)})
    return {
        "version": FORMAT_VERSION,
        "vhosts": list(vhosts),
        "users": [{"name": user.name, "password_hash": user.password_hash,
                   "tags": list(user.tags), "loopback_only": user.loopback_only,
                   "permissions": {vhost: dataclasses.asdict(permission)
                                   for vhost, permission in user.permissions.items()}}
                  for user in users],
        "exchanges": exchanges,
        "bindings": bindings,
    }


def merge_users(configured: Iterable[User], stored: Iterable[Mapping[str, Any]]) -> list[User]:
    """Configured users win; permissions granted at run time (on new vhosts) are kept."""
    users = {user.name: user for user in configured}
    for spec in stored:
        permissions = {vhost: Permission(**perm) for vhost, perm in spec["permissions"].items()}
        current = users.get(spec["name"])
        if current is None:
            users[spec["name"]] = User(spec["name"], spec["password_hash"], tuple(spec["tags"]),
                                       permissions, loopback_only=spec["loopback_only"])
        else:
            users[current.name] = dataclasses.replace(
                current, permissions={**permissions, **current.permissions})
    return list(users.values())


def restore(engine: DiskEngine, definitions: Mapping[str, Any],
            vhosts: dict[str, VHost], new_vhost: Callable[[str], VHost]) -> None:
    """Rebuild durable exchanges, queues (with their messages) and bindings into ``vhosts``.

    Anything that cannot be restored is logged and skipped: a damaged definition never stops
    the broker from starting.
    """
    for spec in definitions.get("exchanges", []):
        vhost = vhosts.get(spec["vhost"])
        try:
            assert vhost is not None, f"unknown vhost {spec['vhost']!r}"
            vhost.restore_exchange(spec["name"], spec["type"], auto_delete=spec["auto_delete"],
                                   internal=spec["internal"],
                                   arguments=_untable(spec["arguments"]))
        except (AssertionError, ValueError, KeyError) as err:
            log.error("not restoring exchange %r: %s", spec.get("name"), err)
    queues = messages = lost = 0
    for meta, store, recovered in engine.recover_queues():
        vhost = vhosts.get(meta["vhost"])
        if vhost is None:
            vhost = vhosts[meta["vhost"]] = new_vhost(meta["vhost"])
            log.warning("vhost %r recreated for its durable queue %r", meta["vhost"],
                        meta["name"])
        vhost.restore_queue(meta["name"], auto_delete=meta["auto_delete"],
                            arguments=_untable(meta["arguments"]), store=store,
                            next_seq=recovered.next_seq)
        queues += 1
        messages += len(store)
        lost += recovered.lost
    for spec in definitions.get("bindings", []):
        vhost = vhosts.get(spec["vhost"])
        try:
            assert vhost is not None, f"unknown vhost {spec['vhost']!r}"
            vhost.restore_binding(spec["source"], spec["destination"],
                                  spec["destination_type"], spec["routing_key"],
                                  _untable(spec["arguments"]))
        except (AssertionError, ValueError, KeyError) as err:
            log.error("not restoring a binding: %s", err)
    log.info("recovered %d durable queue(s) holding %d message(s)%s", queues, messages,
             f"; {lost} damaged record(s) dropped" if lost else "")
