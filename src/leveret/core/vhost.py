"""A virtual host: its exchanges, queues and bindings, and the one API every front door uses.

Each operation opens with guard clauses in RabbitMQ's order (bad name -> exists -> passive ->
reserved prefix -> create) and raises domain errors from `leveret.errors`; the front door turns
them into protocol replies. ``find_*`` returns None, ``get_*`` raises NotFound.

Exclusive queues belong to an *owner*: any object identifying a client connection. Using
another owner's exclusive queue raises ResourceLocked (405).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from leveret.core.arguments import (
    Policy,
    QueueSettings,
    assert_exchange_equivalent,
    assert_queue_equivalent,
    policy_for,
    validate_queue_arguments,
)
from leveret.core.deadletter import dead_letter_copy, is_cycle
from leveret.core.delays import DelayedMessages
from leveret.core.exchanges import (
    EXCHANGE_TYPES,
    Binding,
    DefaultExchange,
    Exchange,
    TopicExchange,
)
from leveret.core.message import Message, PropertiesError
from leveret.core.queue import Consumer, Queue
from leveret.core.tables import FieldTable, TableError, encode_table
from leveret.core.timers import Scheduler
from leveret.errors import (
    AccessRefused,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from leveret.store.base import MessageStore, QueueStore
from leveret.store.memory import MemoryMessageStore

log = logging.getLogger(__name__)

_NOBODY = object()  # an owner no queue has: forces the exclusive-access error

PREDECLARED: tuple[tuple[str, str], ...] = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


def server_generated_name(prefix: str) -> str:
    """``prefix`` plus 22 characters of base64url, like RabbitMQ's amq.gen- and amq.ctag- names."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class VHost:
    """Exchanges, queues and bindings of one virtual host."""

    def __init__(self, name: str, store: MessageStore | None = None,
                 scheduler: Scheduler | None = None, policies: Iterable[Policy] = ()) -> None:
        self.name = name
        self.store: MessageStore = store if store is not None else MemoryMessageStore()
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.policies = tuple(policies)
        self.delays = DelayedMessages(self.store.open_delays(name), self.scheduler,
                                      self._route_delayed)
        self.delays.arm()  # delays recovered from disk
        self.queues: dict[str, Queue] = {}
        self.exchanges: dict[str, Exchange] = {"": DefaultExchange(self.queues)}
        # Reverse index: id(destination) -> exchanges holding a binding to it.
        self._sources: dict[int, dict[str, Exchange]] = {}
        # Exclusive queues by owner, so a closing connection finds its own at once.
        self._owned: dict[object, dict[str, Queue]] = {}
        self._cycles_reported: set[tuple[str, tuple[str, ...]]] = set()
        for name_, type_ in PREDECLARED:
            self.exchanges[name_] = EXCHANGE_TYPES[type_](name_, durable=True)
        self.exchanges["amq.rabbitmq.trace"] = TopicExchange(
            "amq.rabbitmq.trace", durable=True, internal=True
        )

    def __repr__(self) -> str:
        return f"<VHost {self.name!r}>"

    # -- lookups ----------------------------------------------------------------------

    def find_exchange(self, name: str) -> Exchange | None:
        return self.exchanges.get(name)

    def get_exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return exchange

    def find_queue(self, name: str) -> Queue | None:
        return self.queues.get(name)

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        """The queue, checked for exclusive access by ``owner``."""
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        self._check_owner(queue, owner)
        return queue

    def _check_owner(self, queue: Queue, owner: object | None) -> None:
        if queue.exclusive_owner is not owner and (queue.exclusive_owner is not None
                                                   or owner is _NOBODY):
            raise ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost "
                f"'{self.name}'. It could be originally declared on another connection or the "
                "exclusive property value does not match that of the original declaration."
            )

    # -- exchanges --------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: FieldTable | None = None,
    ) -> Exchange:
        arguments = arguments or {}
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if passive:
            return self.get_exchange(name)
        exchange_type = EXCHANGE_TYPES.get(type_name)
        if exchange_type is None:
            adjective = "invalid" if type_name == "" else "unknown"
            raise CommandInvalid(f"{adjective} exchange type '{type_name}'")
        existing = self.exchanges.get(name)
        if existing is None:
            if name.startswith("amq."):
                raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
            if durable:
                _check_storable(arguments, f"exchange '{name}' in vhost '{self.name}'")
            exchange = exchange_type(
                name, durable=durable, auto_delete=auto_delete, internal=internal,
                arguments=arguments,
            )
            self.exchanges[name] = exchange
            if durable:
                self.store.definitions_changed()
            return exchange
        self._assert_exchange_equivalent(existing, type_name, durable, auto_delete, internal)
        assert_exchange_equivalent(name, self.name, existing.arguments, arguments)
        return existing

    def _assert_exchange_equivalent(
        self, exchange: Exchange, type_name: str, durable: bool, auto_delete: bool, internal: bool
    ) -> None:
        for field, current, received in (
            ("type", exchange.type_name, type_name),
            ("durable", exchange.durable, durable),
            ("auto_delete", exchange.auto_delete, auto_delete),
            ("internal", exchange.internal, internal),
        ):
            if current != received:
                raise PreconditionFailed(
                    f"inequivalent arg '{field}' for exchange '{exchange.name}' in vhost "
                    f"'{self.name}': received '{_show(received)}' but current is '{_show(current)}'"
                )

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange; a missing one is not an error (as in RabbitMQ)."""
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return
        if name.startswith("amq."):
            raise AccessRefused(f"deletion of system exchange '{name}' in vhost '{self.name}' "
                                "not allowed")
        if if_unused and exchange.has_bindings:
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        exchange.deleted = True
        if exchange.durable:
            self.store.definitions_changed()
        for binding in exchange.bindings():
            exchange.unbind(binding)
            self._forget_source(binding.destination, exchange)
        self._unbind_everywhere(exchange)

    # -- queues -----------------------------------------------------------------------

    def declare_queue(
        self,
        name: str,
        owner: object | None = None,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: FieldTable | None = None,
    ) -> Queue:
        arguments = arguments or {}
        if passive:
            return self.get_queue(name, owner)
        existing = self.queues.get(name) if name else None
        if existing is not None:
            self._check_owner(existing, owner)
            if existing.exclusive != exclusive:
                self._check_owner(existing, _NOBODY)  # RabbitMQ answers 405 here, not 406
            self._assert_queue_equivalent(existing, durable, auto_delete)
            assert_queue_equivalent(name, self.name, existing.arguments, arguments)
            existing.touch()
            return existing
        if not name:
            name = server_generated_name("amq.gen-")
        elif name.startswith("amq."):
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        validate_queue_arguments(
            name, self.name, arguments, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete,
        )
        # An exclusive queue dies with its connection, so it is never written to disk.
        exclusive_owner = owner if exclusive else None
        persist = durable and exclusive_owner is None
        encoded = _check_storable(arguments, f"queue '{name}' in vhost '{self.name}'") \
            if persist else b""
        settings = self._settings(name, arguments)
        queue = Queue(
            name, durable=durable, exclusive_owner=exclusive_owner,
            auto_delete=auto_delete, arguments=arguments, settings=settings, host=self,
            store=self.store.open_queue(self.name, name, durable=persist,
                                        auto_delete=auto_delete, arguments=encoded,
                                        max_priority=settings.max_priority),
        )
        self.queues[name] = queue
        if queue.exclusive_owner is not None:
            self._owned.setdefault(owner, {})[name] = queue
        return queue

    def _assert_queue_equivalent(self, queue: Queue, durable: bool, auto_delete: bool) -> None:
        checks = [("auto_delete", queue.auto_delete, auto_delete)]
        if not queue.exclusive:  # RabbitMQ ignores the durable flag of exclusive queues
            checks.insert(0, ("durable", queue.durable, durable))
        for field, current, received in checks:
            if current != received:
                raise PreconditionFailed(
                    f"inequivalent arg '{field}' for queue '{queue.name}' in vhost '{self.name}': "
                    f"received '{_show(received)}' but current is '{_show(current)}'"
                )

    def delete_queue(
        self, name: str, owner: object | None = None, *, if_unused: bool = False,
        if_empty: bool = False,
    ) -> int:
        """Delete a queue; return how many ready messages it held. A missing queue returns 0."""
        queue = self.queues.get(name)
        if queue is None:
            return 0
        self._check_owner(queue, owner)
        if if_unused and queue.consumer_count:
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' in use")
        if if_empty and queue.message_count:
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' not empty")
        return self.remove_queue(queue)

    def remove_queue(self, queue: Queue) -> int:
        """Delete without checks (auto-delete, exclusive owner gone); notify its consumers."""
        if self.queues.get(queue.name) is not queue:
            return 0
        count = queue.message_count
        del self.queues[queue.name]
        if queue.durable:
            self.store.definitions_changed()
        if queue.exclusive_owner is not None:
            owned = self._owned.get(queue.exclusive_owner, {})
            owned.pop(queue.name, None)
            if not owned:
                self._owned.pop(queue.exclusive_owner, None)
        for consumer in queue.delete():
            consumer.channel.consumer_cancelled(consumer)
        self._unbind_everywhere(queue)
        return count

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        return self.get_queue(name, owner).purge()

    def owner_closed(self, owner: object) -> None:
        """The owning connection is gone: delete its exclusive queues."""
        for queue in list(self._owned.get(owner, {}).values()):
            self.remove_queue(queue)

    # -- bindings ---------------------------------------------------------------------

    def bind_queue(
        self, queue_name: str, exchange_name: str, routing_key: str,
        arguments: FieldTable | None = None, owner: object | None = None,
    ) -> None:
        exchange = self._bindable_exchange(exchange_name)  # reported before a missing queue
        queue = self.get_queue(queue_name, owner)
        self._bind(exchange, queue, routing_key, arguments or {})

    def unbind_queue(
        self, queue_name: str, exchange_name: str, routing_key: str,
        arguments: FieldTable | None = None, owner: object | None = None,
    ) -> None:
        """Remove a binding; anything missing is not an error (as in RabbitMQ)."""
        if exchange_name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        queue = self.queues.get(queue_name)
        exchange = self.exchanges.get(exchange_name)
        if queue is not None and exchange is not None:
            self._unbind(exchange, queue, routing_key, arguments or {})

    def bind_exchange(
        self, destination: str, source: str, routing_key: str,
        arguments: FieldTable | None = None,
    ) -> None:
        dest = self._bindable_exchange(destination)
        self._bind(self._bindable_exchange(source), dest, routing_key, arguments or {})

    def unbind_exchange(
        self, destination: str, source: str, routing_key: str,
        arguments: FieldTable | None = None,
    ) -> None:
        if "" in (source, destination):
            raise AccessRefused("operation not permitted on the default exchange")
        dest, exchange = self.exchanges.get(destination), self.exchanges.get(source)
        if dest is not None and exchange is not None:
            self._unbind(exchange, dest, routing_key, arguments or {})

    def _bindable_exchange(self, name: str) -> Exchange:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        return self.get_exchange(name)

    def _bind(
        self, exchange: Exchange, dest: Queue | Exchange, routing_key: str, arguments: FieldTable
    ) -> None:
        exchange.validate_binding(arguments)
        durable = exchange.durable and dest.durable
        if durable:
            _check_storable(arguments, f"a binding in vhost '{self.name}'")
        if exchange.bind(Binding.make(dest, routing_key, arguments)):
            self._sources.setdefault(id(dest), {})[exchange.name] = exchange
            if durable:
                self.store.definitions_changed()

    def _unbind(
        self, exchange: Exchange, dest: Queue | Exchange, routing_key: str, arguments: FieldTable
    ) -> None:
        if not exchange.unbind(Binding.make(dest, routing_key, arguments)):
            return  # RabbitMQ answers unbind-ok for a binding that does not exist
        if exchange.durable and dest.durable:
            self.store.definitions_changed()
        if not any(b.destination is dest for b in exchange.bindings()):
            self._forget_source(dest, exchange)
        self._auto_delete(exchange)

    def _forget_source(self, dest: Queue | Exchange, exchange: Exchange) -> None:
        sources = self._sources.get(id(dest))
        if sources is not None:
            sources.pop(exchange.name, None)
            if not sources:
                del self._sources[id(dest)]

    def _unbind_everywhere(self, dest: Queue | Exchange) -> None:
        for exchange in list(self._sources.pop(id(dest), {}).values()):
            exchange.unbind_destination(dest)
            self._auto_delete(exchange)

    def _auto_delete(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.has_bindings and not exchange.deleted:
            self._remove_exchange(exchange)

    # -- routing ----------------------------------------------------------------------

    def route(self, exchange: Exchange, message: Message) -> Sequence[Queue]:
        """Every queue the message reaches through ``exchange``, each once.

        Follows exchange-to-exchange bindings (each exchange visited once, so cycles end) and
        alternate exchanges of exchanges that route nowhere.
        """
        if not exchange.exchange_bindings:  # the common case: straight to queues
            direct = exchange.route(message)
            if direct:
                return direct  # type: ignore[return-value]
        queues: dict[int, Queue] = {}
        pending: list[Exchange] = [exchange]
        visited: set[int] = {id(exchange)}
        while pending:
            current = pending.pop()
            routed = False
            for dest in current.route(message):
                routed = True
                if isinstance(dest, Queue):
                    queues[id(dest)] = dest
                elif id(dest) not in visited:
                    visited.add(id(dest))
                    pending.append(dest)
            if not routed:
                alternate = self._alternate(current)
                if alternate is not None and id(alternate) not in visited:
                    visited.add(id(alternate))
                    pending.append(alternate)
        return list(queues.values())

    def _alternate(self, exchange: Exchange) -> Exchange | None:
        name = exchange.alternate_exchange
        return self.exchanges.get(name) if name is not None else None

    # -- recovery ---------------------------------------------------------------------

    def restore_exchange(self, name: str, type_name: str, *, auto_delete: bool, internal: bool,
                         arguments: FieldTable) -> None:
        """Recreate a durable exchange found on disk (no checks, no definitions change)."""
        exchange_type = EXCHANGE_TYPES.get(type_name)
        if exchange_type is None or name in self.exchanges:
            raise ValueError(f"cannot restore exchange {name!r} of type {type_name!r}")
        self.exchanges[name] = exchange_type(name, durable=True, auto_delete=auto_delete,
                                             internal=internal, arguments=arguments)

    def restore_queue(self, name: str, *, auto_delete: bool, arguments: FieldTable,
                      store: QueueStore, next_seq: int) -> Queue:
        """Recreate a durable queue around the store recovery built for it."""
        queue = Queue(name, durable=True, auto_delete=auto_delete, arguments=arguments,
                      store=store, next_seq=next_seq, settings=self._settings(name, arguments),
                      host=self)
        self.queues[name] = queue
        queue.recovered()
        return queue

    # -- what queues ask of their vhost (core.queue.QueueHost) ------------------------

    def _settings(self, queue: str, arguments: FieldTable) -> QueueSettings:
        policy = policy_for(self.policies, self.name, queue)
        return QueueSettings.resolve(arguments, policy.definition if policy else None)

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        """Republish a message that died in ``queue`` through its dead-letter exchange,
        except into queues that would close an automatic cycle (RabbitMQ's rule)."""
        settings = queue.settings
        if settings.dead_letter_exchange is None:
            return
        exchange = self.exchanges.get(settings.dead_letter_exchange)
        if exchange is None:
            log.debug("dead letter from %r dropped: no exchange %r", queue.name,
                      settings.dead_letter_exchange)
            return
        try:
            copy, history = dead_letter_copy(message, reason, queue.name, exchange.name,
                                             settings.dead_letter_routing_key, int(time.time()))
            targets = self.route(exchange, copy)
        except PropertiesError as err:
            log.warning("dead letter from queue %r dropped: %s", queue.name, err)
            return
        for target in targets:
            if is_cycle(target.name, history, reason):
                self._report_cycle(target.name, history)
                continue
            target.publish(copy)

    def _report_cycle(self, queue: str, history: list[dict[str, Any]]) -> None:
        key = (queue, tuple(str(d.get("queue")) for d in history))
        if key not in self._cycles_reported:
            self._cycles_reported.add(key)
            log.warning("message dropped: dead-letter queues cycle detected: %s; this cycle "
                        "will not be reported again", [queue, *key[1]])

    def queue_unused(self, queue: Queue) -> None:
        log.info("queue %r in vhost %r expired (x-expires)", queue.name, self.name)
        self.remove_queue(queue)

    def _route_delayed(self, message: Message) -> None:
        """A delayed message is due: route it through its exchange now."""
        exchange = self.exchanges.get(message.exchange)
        if exchange is None:
            log.info("delayed message dropped: exchange %r no longer exists", message.exchange)
            return
        try:
            queues = self.route(exchange, message)
        except PropertiesError:
            return
        for queue in queues:
            queue.publish(message)

    def restore_binding(self, source: str, destination: str, kind: str, routing_key: str,
                        arguments: FieldTable) -> None:
        exchange = self.exchanges.get(source)
        dest = (self.queues if kind == "queue" else self.exchanges).get(destination)
        if exchange is None or dest is None:
            raise ValueError(f"binding from {source!r} to {kind} {destination!r}: "
                             "one end no longer exists")
        if exchange.bind(Binding.make(dest, routing_key, arguments)):
            self._sources.setdefault(id(dest), {})[exchange.name] = exchange

    # -- consumers --------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        queue = consumer.queue
        if queue.exclusive_use_conflict(consumer.exclusive):
            raise AccessRefused(f"queue '{queue.name}' in vhost '{self.name}' in exclusive use")
        queue.add_consumer(consumer)
        queue.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Detach a consumer; an auto-delete queue left with none is deleted."""
        queue = consumer.queue
        if queue.remove_consumer(consumer) and queue.unused_and_auto_delete:
            self.remove_queue(queue)

    def remove_consumers(self, consumers: Iterable[Consumer]) -> None:
        for consumer in consumers:
            self.remove_consumer(consumer)


def _check_storable(arguments: FieldTable, what: str) -> bytes:
    """The encoded argument table of a durable entity; 406 if it cannot be written."""
    try:
        return encode_table(arguments)
    except TableError as err:
        raise PreconditionFailed(f"arguments of {what} cannot be stored: {err}") from err


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
