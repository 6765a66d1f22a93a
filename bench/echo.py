"""The bare RPC echo server: the bus-side limit an agent is measured against.

``python -m bench.echo --host NAME --queue-type classic|quorum`` declares the queue an
agent of that host would have (``virtbus.host.NAME``, same arguments, bound to
``virtbus.commands`` with the host name), consumes it with the agent's prefetch and
answers every message with its own body, under the agent's ack policy: the reply is
published with publisher confirms, and only then is the message acked. Nothing is
parsed and nothing is stored, so the difference to an agent is the agent's own work.
Prints ``ready`` on standard output once it consumes; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from schemas.topology import COMMANDS_EXCHANGE, DEAD_EXCHANGE, host_queue

PREFETCH = 64
"""The agent's default prefetch."""


async def answer(channel: AbstractRobustChannel, message: AbstractIncomingMessage) -> None:
    if message.reply_to:
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                content_type="application/json",
                correlation_id=message.correlation_id,
                message_id=message.message_id,
            ),
            routing_key=message.reply_to,
        )
    await message.ack()


async def serve(url: str, host: str, queue_type: Literal["classic", "quorum"]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    connection = await aio_pika.connect_robust(
        url, client_properties={"connection_name": f"virtbus bench echo {host}"}
    )
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        await channel.set_qos(prefetch_count=PREFETCH)
        commands = await channel.declare_exchange(
            COMMANDS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(
            host_queue(host),
            durable=True,
            arguments={"x-queue-type": queue_type, "x-dead-letter-exchange": DEAD_EXCHANGE},
        )
        await queue.bind(commands, routing_key=host)
        answers: set[asyncio.Task[None]] = set()

        async def consume() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    task = asyncio.create_task(answer(channel, message))
                    answers.add(task)
                    task.add_done_callback(answers.discard)

        consumer = asyncio.create_task(consume())
        print("ready", flush=True)
        await stop.wait()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        if answers:
            await asyncio.wait(answers, timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--queue-type", choices=["classic", "quorum"], default="quorum")
    args = parser.parse_args()
    asyncio.run(serve(args.amqp_url, args.host, args.queue_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
