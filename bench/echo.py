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
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractRobustChannel,
)

from agent.host.bus import Declarer, reply_message
from schemas.topology import (
    COMMANDS_EXCHANGE,
    DEAD_EXCHANGE,
    QueueType,
    command_bindings,
    command_queue,
    host_queue,
)

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


class BareHost:
    """A fleet host with no agent behind it: the agent's queue, bindings, prefetch and
    reply (same properties, not mandatory, confirmed before the ack), and nothing in
    between. Each reply is a fixed ``ok`` body with the command's id; nothing is parsed,
    stored or run. A fleet of these is the floor the AMQP client stack sets for a fleet
    of agents packed the same way."""

    def __init__(self, url: str, host: str, group: str, queue_type: QueueType) -> None:
        self.url = url
        self.host = host
        self.group = group
        self.queue_type = queue_type
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._answers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": f"virtbus bench bare {self.host}"}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=PREFETCH)
        declarer = Declarer(self._channel)
        queue = command_queue(self.host, self.queue_type)
        for binding in command_bindings(queue, self.host, [self.group]):
            await declarer.bind(binding)
        await (await declarer.queue(queue)).consume(self._take)

    async def _take(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._answer(message))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        assert self._channel is not None
        command_id = message.message_id or message.correlation_id or ""
        if message.reply_to:
            body = b'{"v":1,"id":"%s","host":"%s","ok":true,"result":{}}' % (
                command_id.encode(),
                self.host.encode(),
            )
            await self._channel.default_exchange.publish(
                reply_message(self.host, command_id, body, message.correlation_id),
                routing_key=message.reply_to,
                mandatory=False,
            )
        await message.ack()

    async def stop(self) -> None:
        if self._answers:
            await asyncio.wait(self._answers, timeout=5)
        if self._connection is not None:
            await self._connection.close()
