"""Order burst: a queue lets a fast producer and a slow consumer each work at their own pace.

An "order service" publishes a burst of orders (10,000 in about a second) to the durable queue
'orders'. An "email sender" works through them at its own safe pace (50 emails a second). Run it
and watch three things a message queue gives you:

1. The order service never waits for the email sender: the burst is published (and confirmed
   by the broker) in seconds, long before the emails are sent. An API built this way answers
   its callers at once.
2. The queue absorbs the spike: its depth jumps during the burst, then drains steadily.
3. Nothing is lost: every order id is emailed exactly once.

    python examples/order_burst.py                       # starts a Leveret broker in-process
    python examples/order_burst.py --url amqp://guest:guest@127.0.0.1:5672/%2F

Exit status 0 only when every order was emailed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time

import aio_pika

QUEUE = "orders"


class Tally:
    """What each side has done so far; the progress reporter and the final check read it."""

    def __init__(self) -> None:
        self.published = 0
        self.emailed: collections.Counter[int] = collections.Counter()  # order id -> emails


async def reset_queue(url: str) -> None:
    """Start from a clean slate, so that reruns don't see a previous run's orders."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        # durable: the queue itself survives a broker restart (the messages are persistent too)
        await channel.declare_queue(QUEUE, durable=True)


async def order_service(url: str, tally: Tally, orders: int, burst_seconds: float) -> float:
    """Publish the orders spread evenly over `burst_seconds`; return how long that took."""
    async with await aio_pika.connect(url) as connection:
        # With publisher confirms, publish() returns only once the broker has taken charge
        # of the message, and raises if the broker refuses it: no order vanishes silently.
        channel = await connection.channel(publisher_confirms=True)
        started = time.monotonic()
        ticks = max(1, round(burst_seconds * 10))  # 10 batches a second
        for tick in range(ticks):
            # A batch is published concurrently: all its confirms are awaited together.
            batch = range(orders * tick // ticks, orders * (tick + 1) // ticks)
            await asyncio.gather(*(publish_order(channel, tally, order_id) for order_id in batch))
            # Keep to the schedule; when publishing is slower than that, just carry on.
            next_tick = started + (tick + 1) * burst_seconds / ticks
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        return time.monotonic() - started


async def publish_order(channel: aio_pika.abc.AbstractChannel, tally: Tally, order_id: int) -> None:
    order = {"order_id": order_id, "email": f"customer{order_id}@example.com"}
    message = aio_pika.Message(
        json.dumps(order).encode(), content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,  # kept on disk where the broker can
    )
    await channel.default_exchange.publish(message, routing_key=QUEUE)  # waits for the confirm
    tally.published += 1


async def email_sender(url: str, tally: Tally, orders: int, rate: float) -> None:
    """Send one email per order, never faster than `rate` a second; ack each after sending."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        # Hold only a few orders at a time: the rest wait in the queue, safe and visible,
        # rather than piling up in this process's memory.
        await channel.set_qos(prefetch_count=10)
        queue = await channel.get_queue(QUEUE)
        next_slot = time.monotonic()
        async with queue.iterator() as messages:
            async for message in messages:
                await asyncio.sleep(max(0.0, next_slot - time.monotonic()))  # the rate limit
                next_slot = max(next_slot, time.monotonic()) + 1 / rate
                order = json.loads(message.body)
                # ... a real sender would talk to the mail server here ...
                await message.ack()  # only now does the broker forget the order
                tally.emailed[order["order_id"]] += 1
                if len(tally.emailed) == orders:
                    return


async def report_progress(url: str, tally: Tally, started: float) -> None:
    """Every second: how many orders are published, how many emailed, and the queue depth."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        while True:
            await asyncio.sleep(1)
            # A passive declare changes nothing; it reports the number of ready messages.
            queue = await channel.declare_queue(QUEUE, passive=True)
            depth = queue.declaration_result.message_count
            print(f"{time.monotonic() - started:6.1f}s  published {tally.published:6d}  "
                  f"emailed {tally.emailed.total():6d}  queue depth {depth:6d}", flush=True)


async def wait_for(sender: asyncio.Task[None], tally: Tally, stall_seconds: float) -> None:
    """Wait for the sender to finish; give up when it makes no progress for a while."""
    while not sender.done():
        before = tally.emailed.total()
        await asyncio.wait({sender}, timeout=stall_seconds)
        if not sender.done() and tally.emailed.total() == before:
            print(f"email sender: no progress for {stall_seconds:.0f}s, giving up")
            sender.cancel()
    if not sender.cancelled():
        sender.result()  # raise the sender's error, if it had one


async def run(url: str, orders: int, rate: float, burst_seconds: float) -> bool:
    await reset_queue(url)
    tally = Tally()
    started = time.monotonic()
    reporter = asyncio.create_task(report_progress(url, tally, started))
    sender = asyncio.create_task(email_sender(url, tally, orders, rate))

    publish_seconds = await order_service(url, tally, orders, burst_seconds)
    emailed_by_then = tally.emailed.total()
    print(f"order service: published and confirmed {orders} orders in {publish_seconds:.2f}s, "
          f"never waiting for the email sender ({emailed_by_then} emails sent so far; "
          f"the rest need about {(orders - emailed_by_then) / rate:.0f}s more)", flush=True)

    await wait_for(sender, tally, stall_seconds=10)
    emails_seconds = time.monotonic() - started
    reporter.cancel()
    print(f"email sender: sent {tally.emailed.total()} emails in {emails_seconds:.1f}s "
          f"(at most {rate:g} a second)")
    return await check(url, tally, orders)


async def check(url: str, tally: Tally, orders: int) -> bool:
    """Every order id emailed exactly once, and nothing left behind in the queue."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        left = (await channel.declare_queue(QUEUE, passive=True)).declaration_result.message_count
    missing = orders - sum(1 for order_id in range(orders) if tally.emailed[order_id])
    duplicates = sum(count - 1 for count in tally.emailed.values() if count > 1)
    print(f"check: {orders} orders, {tally.emailed.total()} emails, {missing} missing, "
          f"{duplicates} duplicates, {left} left in the queue")
    ok = missing == 0 and duplicates == 0 and left == 0 and len(tally.emailed) == orders
    print("OK: every order was emailed exactly once" if ok else "FAILED: orders were lost or "
          "emailed twice")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="broker URL (default: start a Leveret broker in-process)")
    parser.add_argument("--orders", type=int, default=10_000, help="orders in the burst")
    parser.add_argument("--rate", type=float, default=50, help="emails per second")
    parser.add_argument("--burst-seconds", type=float, default=1, help="length of the burst")
    args = parser.parse_args(argv)
    work = (args.orders, args.rate, args.burst_seconds)
    if args.url:
        return 0 if asyncio.run(run(args.url, *work)) else 1
    from leveret import Broker  # only needed for the embedded broker

    with Broker() as broker:  # runs on a thread of its own, listening on a free port
        print(f"embedded Leveret broker listening at {broker.url}")
        return 0 if asyncio.run(run(broker.url, *work)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
