"""Handlers for the exchange and queue classes: declare, delete, bind, unbind, purge.

Each is a guard (the user's permission on the resource) followed by one call into
`core.vhost`, whose domain errors the channel turns into Channel.Close or Connection.Close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from leveret.amqp import framing

if TYPE_CHECKING:
    from leveret.amqp.channel import Channel


def on_exchange_declare(ch: Channel, method: commands.Exchange.Declare) -> None:
    if not method.passive:
        ch.check_permission("configure", "exchange", method.exchange)
    ch.vhost.declare_exchange(
        method.exchange,
        method.exchange_type,
        passive=method.passive,
        durable=method.durable,
        auto_delete=method.auto_delete,
        internal=method.internal,
        arguments=method.arguments,
    )
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Exchange.DeclareOk())


def on_exchange_delete(ch: Channel, method: commands.Exchange.Delete) -> None:
    ch.check_permission("configure", "exchange", method.exchange)
    ch.vhost.delete_exchange(method.exchange, if_unused=method.if_unused)
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Exchange.DeleteOk())


def on_exchange_bind(ch: Channel, method: commands.Exchange.Bind) -> None:
    ch.check_permission("write", "exchange", method.destination)
    ch.check_permission("read", "exchange", method.source)
    ch.vhost.bind_exchange(method.destination, method.source, method.routing_key, method.arguments)
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Exchange.BindOk())


def on_exchange_unbind(ch: Channel, method: commands.Exchange.Unbind) -> None:
    ch.check_permission("write", "exchange", method.destination)
    ch.check_permission("read", "exchange", method.source)
    ch.vhost.unbind_exchange(
        method.destination, method.source, method.routing_key, method.arguments
    )
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Exchange.UnbindOk())


def on_queue_declare(ch: Channel, method: commands.Queue.Declare) -> None:
    if not method.passive and method.queue:
        ch.check_permission("configure", "queue", method.queue)
    queue = ch.vhost.declare_queue(
        method.queue,
        ch.conn,
        passive=method.passive,
        durable=method.durable,
        exclusive=method.exclusive,
        auto_delete=method.auto_delete,
        arguments=method.arguments,
    )
    ch.last_queue = queue.name
    if not method.nowait:
        ch.conn.send(
            framing.declare_ok(ch.id, queue.name, queue.message_count, queue.consumer_count)
        )


def on_queue_bind(ch: Channel, method: commands.Queue.Bind) -> None:
    name = ch.resolve_queue_name(method.queue)
    ch.check_permission("write", "queue", name)
    ch.check_permission("read", "exchange", method.exchange)
    ch.vhost.bind_queue(name, method.exchange, method.routing_key, method.arguments, ch.conn)
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Queue.BindOk())


def on_queue_unbind(ch: Channel, method: commands.Queue.Unbind) -> None:
    name = ch.resolve_queue_name(method.queue)
    ch.check_permission("write", "queue", name)
    ch.check_permission("read", "exchange", method.exchange)
    ch.vhost.unbind_queue(name, method.exchange, method.routing_key, method.arguments, ch.conn)
    ch.conn.send_method(ch.id, commands.Queue.UnbindOk())


def on_queue_purge(ch: Channel, method: commands.Queue.Purge) -> None:
    name = ch.resolve_queue_name(method.queue)
    ch.check_permission("read", "queue", name)
    count = ch.vhost.purge_queue(name, ch.conn)
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Queue.PurgeOk(message_count=count))


def on_queue_delete(ch: Channel, method: commands.Queue.Delete) -> None:
    name = ch.resolve_queue_name(method.queue)
    ch.check_permission("configure", "queue", name)
    count = ch.vhost.delete_queue(
        name, ch.conn, if_unused=method.if_unused, if_empty=method.if_empty
    )
    if not method.nowait:
        ch.conn.send_method(ch.id, commands.Queue.DeleteOk(message_count=count))


HANDLERS: dict[type, Callable[[Channel, Any], None]] = {
    commands.Exchange.Declare: on_exchange_declare,
    commands.Exchange.Delete: on_exchange_delete,
    commands.Exchange.Bind: on_exchange_bind,
    commands.Exchange.Unbind: on_exchange_unbind,
    commands.Queue.Declare: on_queue_declare,
    commands.Queue.Bind: on_queue_bind,
    commands.Queue.Unbind: on_queue_unbind,
    commands.Queue.Purge: on_queue_purge,
    commands.Queue.Delete: on_queue_delete,
}
