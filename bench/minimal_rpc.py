"""The ``virtbus`` CLI's baseline (B7): the least an aio-pika script does to send one
command to a host and print its reply. ``python bench/minimal_rpc.py URL HOST OP
TARGET_JSON [ARGS_JSON]``. Like the CLI: one connection, a channel with publisher
confirms, an exclusive server-named reply queue, the same command body, persistent and
mandatory. Unlike it: no validation, no parsing but ``json.loads``, no settings."""

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def main(url: str, host: str, op: str, target: str, args: str = "{}") -> int:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(message: AbstractIncomingMessage) -> None:
            answered.set_result(message.body)

        await replies.consume(on_reply, no_ack=True)
        command_id, deadline = uuid.uuid4().hex, datetime.now(UTC) + timedelta(seconds=10)
        command = {"v": 1, "id": command_id, "op": op, "deadline": deadline.isoformat()}
        command |= {"args": json.loads(args)} | ({"target": json.loads(target)} if target else {})
        message = aio_pika.Message(
            json.dumps(command).encode(),
            content_type="application/json",
            correlation_id=command_id,
            reply_to=replies.name,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=10,
        )
        exchange = await channel.get_exchange("virtbus.commands", ensure=False)
        await exchange.publish(message, routing_key=host, mandatory=True)
        reply = json.loads(await asyncio.wait_for(answered, 10))
        print(json.dumps(reply["result"] if reply.get("error") is None else reply["error"]))
        return 0 if reply.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:])))
