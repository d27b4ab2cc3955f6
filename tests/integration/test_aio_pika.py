"""aio-pika (over aiormq) against the real broker in the test's own event loop.

Proves that an asyncio client sees Leveret as it sees RabbitMQ: declarations and bindings,
publisher confirms, manual acks, topic, headers, exchange-to-exchange and alternate-exchange
routing, mandatory returns, prefetch, nack, redelivery after a channel closes, the queue
iterator, basic.get, transactions, messages larger than a frame, a consumer cancelled by the
server when its queue is deleted, a robust connection recovering (after that cancel, and after
a broker restart), and exclusive queues locked to their connection (405 RESOURCE_LOCKED).
Every test here except the broker restart also passes unchanged against RabbitMQ 3.10.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import PublishError, QueueEmpty
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity
from pamqp import commands

from leveret import Broker

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0
"""Seconds to wait for something the broker should do promptly."""


@pytest.fixture
async def connection(async_broker: Broker) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(async_broker.url)
    yield conn
    await conn.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AbstractChannel:
    return await connection.channel()  # publisher confirms are on by default


class Collector:
    """A consumer callback that keeps what it receives and can wait for a count."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[AbstractIncomingMessage]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    @property
    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]


async def message_count(channel: AbstractChannel, name: str) -> int:
    # A robust channel answers declare_queue() for a known name from its cache, so ask the
    # broker directly through the underlying aiormq channel.
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(name, passive=True)
    assert declared.message_count is not None
    return declared.message_count


async def drain(queue: AbstractQueue) -> list[bytes]:
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body)
    return bodies


async def test_publish_with_confirms_and_consume_with_manual_ack(
    connection: AbstractRobustConnection, channel: AbstractChannel,
) -> None:
    exchange = await channel.declare_exchange("orders", ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue("orders.new", durable=True)
    await queue.bind(exchange, routing_key="new")

    confirmation = await exchange.publish(
        Message(b'{"id": 1}', content_type="application/json",
                delivery_mode=DeliveryMode.PERSISTENT, headers={"source": "test"}),
        routing_key="new",
    )
    assert isinstance(confirmation, commands.Basic.Ack)
    confirmations = await asyncio.gather(*(
        exchange.publish(Message(str(i).encode()), routing_key="new") for i in range(100)
    ))
    assert all(isinstance(c, commands.Basic.Ack) for c in confirmations)
    assert await message_count(channel, "orders.new") == 101

    received = Collector()
    tag = await queue.consume(received, no_ack=False)
    messages = await received.wait_for(101)
    first = messages[0]
    assert first.body == b'{"id": 1}'
    assert first.content_type == "application/json"
    assert first.delivery_mode == DeliveryMode.PERSISTENT
    assert first.headers == {"source": "test"}
    assert first.exchange == "orders"
    assert first.routing_key == "new"
    assert first.redelivered is False
    # Concurrent publishes may leave the client in any order; each arrives exactly once.
    assert sorted(int(m.body) for m in messages[1:]) == list(range(100))
    for message in messages:
        await message.ack()
    await queue.cancel(tag)

    # The acks were taken: closing the channel returns nothing to the queue.
    await channel.close()
    other = await connection.channel()
    assert await message_count(other, "orders.new") == 0


async def test_topic_exchange_routes_by_pattern(channel: AbstractChannel) -> None:
    exchange = await channel.declare_exchange("logs", ExchangeType.TOPIC)
    patterns = {"all": "#", "errors": "*.error", "kernel": "kern.#", "exact": "app.web.info"}
    queues = {}
    for name, pattern in patterns.items():
        queues[name] = await channel.declare_queue(f"topic-{name}", exclusive=True)
        await queues[name].bind(exchange, routing_key=pattern)

    keys = ["kern.error", "app.error", "kern.disk.warn", "app.web.info", "app.web.error", "kern"]
    for key in keys:
        await exchange.publish(Message(key.encode()), routing_key=key)

    assert await drain(queues["all"]) == [k.encode() for k in keys]
    assert await drain(queues["errors"]) == [b"kern.error", b"app.error"]
    assert await drain(queues["kernel"]) == [b"kern.error", b"kern.disk.warn", b"kern"]
    assert await drain(queues["exact"]) == [b"app.web.info"]


async def test_headers_exchange_routes_on_all_or_any(channel: AbstractChannel) -> None:
    exchange = await channel.declare_exchange("docs", ExchangeType.HEADERS)
    pdf_reports = await channel.declare_queue("pdf-reports", exclusive=True)
    await pdf_reports.bind(exchange, arguments={"x-match": "all", "format": "pdf",
                                                "type": "report"})
    pdf_or_log = await channel.declare_queue("pdf-or-log", exclusive=True)
    await pdf_or_log.bind(exchange, arguments={"x-match": "any", "format": "pdf",
                                               "type": "log"})

    published = {
        b"pdf report": {"format": "pdf", "type": "report"},
        b"pdf summary": {"format": "pdf", "type": "summary"},
        b"zip log": {"format": "zip", "type": "log"},
        b"zip report": {"format": "zip", "type": "report"},
        b"no headers": {},
    }
    for body, headers in published.items():
        await exchange.publish(Message(body, headers=headers), routing_key="ignored")

    assert await drain(pdf_reports) == [b"pdf report"]
    assert await drain(pdf_or_log) == [b"pdf report", b"pdf summary", b"zip log"]


async def test_mandatory_unroutable_publish_is_returned(
    connection: AbstractRobustConnection,
) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange("nowhere", ExchangeType.DIRECT)
    returned: list[AbstractIncomingMessage] = []
    channel.return_callbacks.add(lambda _channel, message: returned.append(message))

    result = await exchange.publish(Message(b"lost", message_id="m-1"), routing_key="none",
                                    mandatory=True)
    assert isinstance(result, aiormq.abc.DeliveredMessage)
    assert isinstance(result.delivery, commands.Basic.Return)
    assert result.delivery.reply_code == 312
    assert result.delivery.reply_text == "NO_ROUTE"
    assert result.delivery.exchange == "nowhere"
    assert result.delivery.routing_key == "none"
    assert result.body == b"lost"
    assert [m.body for m in returned] == [b"lost"]
    assert returned[0].message_id == "m-1"

    # Not mandatory (aio-pika's default is mandatory=True): dropped, and confirmed with an ack.
    dropped = await exchange.publish(Message(b"dropped"), routing_key="none", mandatory=False)
    assert isinstance(dropped, commands.Basic.Ack)

    raising = await connection.channel(on_return_raises=True)
    with pytest.raises(PublishError) as info:
        await raising.default_exchange.publish(Message(b"lost too"), routing_key="no-queue",
                                               mandatory=True)
    assert isinstance(info.value.frame, commands.Basic.Return)
    assert info.value.frame.reply_code == 312
    assert info.value.message.body == b"lost too"
    assert not raising.is_closed  # a return is not a channel error


async def test_alternate_exchange_takes_what_would_be_returned(channel: AbstractChannel) -> None:
    spare = await channel.declare_exchange("spare", ExchangeType.FANOUT)
    unrouted = await channel.declare_queue("unrouted", exclusive=True)
    await unrouted.bind(spare)
    main = await channel.declare_exchange("main", ExchangeType.DIRECT,
                                          arguments={"alternate-exchange": "spare"})

    confirmation = await main.publish(Message(b"stray"), routing_key="unbound", mandatory=True)
    assert isinstance(confirmation, commands.Basic.Ack)  # routed (to the alternate): no return
    received = await unrouted.get(no_ack=True)
    assert (received.body, received.exchange, received.routing_key) == (
        b"stray", "main", "unbound")


async def test_prefetch_two_without_acks_delivers_exactly_two(channel: AbstractChannel) -> None:
    await channel.set_qos(prefetch_count=2)
    queue = await channel.declare_queue("prefetch", exclusive=True)
    for i in range(5):
        await channel.default_exchange.publish(Message(str(i).encode()), routing_key="prefetch")

    received = Collector()
    await queue.consume(received, no_ack=False)
    await received.wait_for(2)
    await asyncio.sleep(0.3)  # give the broker every chance to overrun the limit
    assert received.bodies == [b"0", b"1"]

    await received.messages[0].ack()
    await received.wait_for(3)
    await asyncio.sleep(0.2)
    assert received.bodies == [b"0", b"1", b"2"]

    await received.messages[1].ack()
    await received.messages[2].ack()
    await received.wait_for(5)
    assert received.bodies == [b"0", b"1", b"2", b"3", b"4"]


async def test_unacked_messages_are_redelivered_when_a_consumer_channel_closes(
    connection: AbstractRobustConnection,
) -> None:
    first = await connection.channel()
    queue = await first.declare_queue("work")
    for i in range(3):
        await first.default_exchange.publish(Message(f"job {i}".encode()), routing_key="work")
    taken = Collector()
    await queue.consume(taken, no_ack=False)
    messages = await taken.wait_for(3)
    assert [m.redelivered for m in messages] == [False, False, False]
    await first.close()  # without acking anything

    second = await connection.channel()
    queue2 = await second.get_queue("work")
    retried = Collector()
    await queue2.consume(retried, no_ack=False)
    messages = await retried.wait_for(3)
    assert retried.bodies == [b"job 0", b"job 1", b"job 2"]
    assert [m.redelivered for m in messages] == [True, True, True]
    for message in messages:
        await message.ack()
    await asyncio.sleep(0.1)
    assert await message_count(second, "work") == 0


async def test_unacked_messages_move_to_a_consumer_on_another_connection(
    async_broker: Broker,
) -> None:
    async with await aio_pika.connect(async_broker.url) as conn_a, \
            await aio_pika.connect(async_broker.url) as conn_b:
        channel_a = await conn_a.channel()
        channel_b = await conn_b.channel()
        await channel_a.set_qos(prefetch_count=10)
        queue_a = await channel_a.declare_queue("shared")
        queue_b = await channel_b.declare_queue("shared")
        got_a, got_b = Collector(), Collector()
        await queue_a.consume(got_a, no_ack=False)
        for i in range(4):
            await channel_a.default_exchange.publish(Message(bytes([i])), routing_key="shared")
        await got_a.wait_for(4)
        await queue_b.consume(got_b, no_ack=False)
        await channel_a.close()
        messages = await got_b.wait_for(4)
        assert got_b.bodies == [bytes([i]) for i in range(4)]
        assert all(m.redelivered for m in messages)


async def test_queue_iterator_processes_and_acks(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("iterated", auto_delete=True)
    for i in range(10):
        await channel.default_exchange.publish(Message(f"{i}".encode()), routing_key="iterated")

    seen = []
    async with asyncio.timeout(WAIT), queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                seen.append(int(message.body))
            if len(seen) == 10:
                break
    assert seen == list(range(10))
    # Leaving the iterator cancelled the queue's only consumer, so the auto-delete queue went.
    with pytest.raises(ChannelNotFoundEntity, match="no queue 'iterated'"):
        await message_count(channel, "iterated")


async def test_leaving_a_queue_iterator_returns_its_prefetched_messages(
    channel: AbstractChannel,
) -> None:
    await channel.set_qos(prefetch_count=5)
    queue = await channel.declare_queue("buffered", exclusive=True)
    for i in range(8):
        await channel.default_exchange.publish(Message(bytes([i])), routing_key="buffered")

    async with asyncio.timeout(WAIT), queue.iterator() as messages:
        taken = 0
        async for message in messages:
            await message.ack()
            taken += 1
            if taken == 2:
                break
    # aio-pika cancels its consumer and rejects (requeue) what it had buffered: 2..4 were
    # delivered before, 5..6 may have been; 7 never was.
    await asyncio.sleep(0.1)
    rest = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        rest.append((message.body[0], message.redelivered))
    assert [body for body, _ in rest] == [2, 3, 4, 5, 6, 7]
    assert all(redelivered for body, redelivered in rest if body <= 4)
    assert rest[-1] == (7, False)


async def test_queue_iterator_requeues_on_error(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("flaky", exclusive=True)
    await channel.default_exchange.publish(Message(b"retry me"), routing_key="flaky")

    deliveries = []
    async with asyncio.timeout(WAIT), queue.iterator() as messages:
        async for message in messages:
            deliveries.append(message.redelivered)
            if message.redelivered:
                await message.ack()
                break
            with pytest.raises(ValueError, match="first try"):
                async with message.process(requeue=True):
                    raise ValueError("first try")
    assert deliveries == [False, True]
    assert await message_count(channel, "flaky") == 0


async def test_basic_get(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("gettable", exclusive=True)
    with pytest.raises(QueueEmpty):
        await queue.get()
    assert await queue.get(fail=False) is None

    for body in (b"a", b"b", b"c"):
        await channel.default_exchange.publish(Message(body), routing_key="gettable")
    message = await queue.get()
    assert message.body == b"a"
    assert message.message_count == 2  # what is left in the queue
    assert message.redelivered is False
    await message.reject(requeue=True)

    again = await queue.get(no_ack=True)
    assert again.body == b"a"
    assert again.redelivered is True
    second = await queue.get()
    assert second.body == b"b"
    await second.ack()
    third = await queue.get()
    await third.reject(requeue=False)
    assert await queue.get(fail=False) is None


async def test_transaction_commit_and_rollback_seen_from_another_channel(
    connection: AbstractRobustConnection,
) -> None:
    tx_channel = await connection.channel(publisher_confirms=False)
    observer = await connection.channel()
    queue = await observer.declare_queue("ledger")

    async with tx_channel.transaction():
        for body in (b"debit", b"credit"):
            await tx_channel.default_exchange.publish(Message(body), routing_key="ledger")
        await asyncio.sleep(0.1)
        assert await message_count(observer, "ledger") == 0  # not yet committed
    assert await drain(queue) == [b"debit", b"credit"]

    tx = tx_channel.transaction()
    await tx.select()
    await tx_channel.default_exchange.publish(Message(b"abandoned"), routing_key="ledger")
    await tx.rollback()
    await tx_channel.default_exchange.publish(Message(b"kept"), routing_key="ledger")
    await asyncio.sleep(0.1)
    assert await message_count(observer, "ledger") == 0
    await tx.commit()
    assert await drain(queue) == [b"kept"]


async def test_transactional_ack_is_undone_by_rollback(
    connection: AbstractRobustConnection,
) -> None:
    observer = await connection.channel()
    await observer.declare_queue("tx-acks")
    await observer.default_exchange.publish(Message(b"job"), routing_key="tx-acks")

    tx_channel = await connection.channel(publisher_confirms=False)
    tx = tx_channel.transaction()
    await tx.select()
    queue = await tx_channel.get_queue("tx-acks")
    message = await queue.get()
    await message.ack()
    await tx.rollback()
    await tx_channel.close()  # the ack was rolled back, so the message is requeued

    again = await (await observer.get_queue("tx-acks")).get()
    assert again.body == b"job"
    assert again.redelivered is True
    await again.ack()


async def test_nack_multiple_requeues_every_earlier_delivery(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("nacked", exclusive=True)
    for i in range(5):
        await channel.default_exchange.publish(Message(bytes([i])), routing_key="nacked")
    received = Collector()
    await queue.consume(received, no_ack=False)
    messages = await received.wait_for(5)
    await messages[3].nack(multiple=True, requeue=True)  # 0..3 go back, 4 stays with us
    messages = await received.wait_for(9)
    assert [(m.body[0], m.redelivered) for m in messages[5:]] == [
        (0, True), (1, True), (2, True), (3, True)]
    await asyncio.sleep(0.2)
    assert len(received.messages) == 9


async def test_a_message_larger_than_frame_max_round_trips(
    async_broker: Broker,
) -> None:
    async with await aio_pika.connect(async_broker.url) as conn:
        channel = await conn.channel()
        frame_max = conn.transport.connection.connection_tune.frame_max
        body = bytes(range(256)) * (3 * frame_max // 256 + 7)  # several body frames
        queue = await channel.declare_queue("big", exclusive=True)
        confirmation = await channel.default_exchange.publish(Message(body), routing_key="big")
        assert isinstance(confirmation, commands.Basic.Ack)
        received = await queue.get(no_ack=True)
        assert len(received.body) == len(body)
        assert received.body == body


async def test_exchange_to_exchange_binding(channel: AbstractChannel) -> None:
    source = await channel.declare_exchange("e2e-source", ExchangeType.FANOUT, auto_delete=True)
    destination = await channel.declare_exchange("e2e-dest", ExchangeType.DIRECT,
                                                 auto_delete=True)
    queue = await channel.declare_queue("e2e", exclusive=True)
    await queue.bind(destination, routing_key="key")
    await destination.bind(source)

    await source.publish(Message(b"through two exchanges"), routing_key="key")
    received = await queue.get(no_ack=True)
    assert (received.body, received.exchange, received.routing_key) == (
        b"through two exchanges", "e2e-source", "key")

    await destination.unbind(source)
    # The auto-delete source has lost its last binding, and with it its life (as in RabbitMQ).
    with pytest.raises(ChannelNotFoundEntity, match="no exchange 'e2e-source'"):
        await source.publish(Message(b"nowhere"), routing_key="key")


async def test_exclusive_consumer_refuses_a_second_consumer(
    connection: AbstractRobustConnection,
) -> None:
    first = await connection.channel()
    queue = await first.declare_queue("solo", exclusive=False, auto_delete=True)
    await queue.consume(Collector(), exclusive=True)
    second = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="in exclusive use"):
        await (await second.get_queue("solo")).consume(Collector())


async def test_consumer_is_cancelled_by_the_server_when_its_queue_is_deleted(
    async_broker: Broker,
) -> None:
    async with await aio_pika.connect(async_broker.url) as conn:
        assert conn.transport is not None
        assert conn.transport.connection.consumer_cancel_notify
        consuming = await conn.channel()
        cancels: asyncio.Queue[commands.Basic.Cancel] = asyncio.Queue()
        underlay = await consuming.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(cancels.put_nowait)
        queue = await consuming.declare_queue("doomed")
        tag = await queue.consume(Collector())
        assert tag in underlay.consumers

        deleter = await conn.channel()
        await deleter.queue_delete("doomed")

        async with asyncio.timeout(WAIT):
            cancel = await cancels.get()
        assert cancel.consumer_tag == tag
        assert tag not in underlay.consumers
        # The connection and the consuming channel are still fine.
        assert not consuming.is_closed
        assert not conn.is_closed
        again = await consuming.declare_queue("doomed")
        await consuming.default_exchange.publish(Message(b"alive"), routing_key="doomed")
        assert (await again.get(no_ack=True)).body == b"alive"


async def test_robust_connection_recovers_from_a_server_cancel(async_broker: Broker) -> None:
    # aio-pika's robust channel answers a server cancel by reconnecting and restoring what it
    # declared (the queue, then its consumer) - against RabbitMQ exactly as against Leveret.
    url = async_broker.url + "?reconnect_interval=0.1"
    async with await aio_pika.connect_robust(url) as conn:
        consuming = await conn.channel()
        queue = await consuming.declare_queue("phoenix")
        received = Collector()
        await queue.consume(received, no_ack=True)

        async with await aio_pika.connect(async_broker.url) as admin:
            admin_channel = await admin.channel()
            await admin_channel.queue_delete("phoenix")
            async with asyncio.timeout(WAIT):
                while True:
                    await asyncio.sleep(0.05)
                    probe = await (await admin.channel()).get_underlay_channel()
                    with contextlib.suppress(ChannelNotFoundEntity):
                        declared = await probe.queue_declare("phoenix", passive=True)
                        if declared.consumer_count == 1:
                            break
                    await probe.close()
            await admin_channel.default_exchange.publish(Message(b"after recovery"),
                                                         routing_key="phoenix")
        await received.wait_for(1)
        assert received.bodies == [b"after recovery"]


async def test_robust_connection_recovers_after_a_broker_restart(async_broker: Broker) -> None:
    # Everything lives in memory, so the new broker starts empty: aio-pika redeclares the
    # exchange, queue, binding and consumer it knows about, and the flow resumes.
    port = async_broker.port
    received = Collector()
    async with await aio_pika.connect_robust(async_broker.url + "?reconnect_interval=0.1") \
            as conn:
        reconnected = asyncio.Event()
        conn.reconnect_callbacks.add(lambda *_: reconnected.set())
        channel = await conn.channel()
        exchange = await channel.declare_exchange("durable-ish", ExchangeType.DIRECT)
        queue = await channel.declare_queue("restored")
        await queue.bind(exchange, routing_key="k")
        await queue.consume(received, no_ack=True)
        await exchange.publish(Message(b"before"), routing_key="k")
        await received.wait_for(1)

        await async_broker.stop()
        async with Broker(port=port) as restarted:
            async with asyncio.timeout(WAIT):
                await reconnected.wait()
            assert list(restarted.vhosts["/"].queues) == ["restored"]
            confirmation = await exchange.publish(Message(b"after"), routing_key="k")
            assert isinstance(confirmation, commands.Basic.Ack)
            await received.wait_for(2)
    assert received.bodies == [b"before", b"after"]


async def test_exclusive_queue_is_locked_to_its_connection(async_broker: Broker) -> None:
    async with await aio_pika.connect(async_broker.url) as owner, \
            await aio_pika.connect(async_broker.url) as other:
        owner_channel = await owner.channel()
        await owner_channel.declare_queue("mine", exclusive=True)

        with pytest.raises(ChannelLockedResource, match="mine"):
            await (await other.channel()).declare_queue("mine", exclusive=True)
        with pytest.raises(ChannelLockedResource, match="mine"):
            await (await other.channel()).declare_queue("mine")
        with pytest.raises(ChannelLockedResource, match="mine"):
            queue = await (await other.channel()).get_queue("mine", ensure=False)
            await queue.consume(Collector())
        with pytest.raises(ChannelLockedResource, match="mine"):
            await (await other.channel()).queue_delete("mine")

        # The owner is unaffected, and other connections may still publish to it.
        publisher = await other.channel()
        await publisher.default_exchange.publish(Message(b"for the owner"), routing_key="mine")
        queue = await owner_channel.get_queue("mine")
        assert (await queue.get(no_ack=True)).body == b"for the owner"

    # Once the owner has gone, the queue has gone with it.
    async with await aio_pika.connect(async_broker.url) as later:
        with pytest.raises(ChannelNotFoundEntity):
            await (await later.channel()).declare_queue("mine", passive=True)
