"""A command is settled on the channel that delivered it, exactly once: aiormq's channel
closes on a second ack or nack of one delivery tag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import aiormq
import pytest
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.header import ContentHeader

from agent.host.bus import Bus, BusUnavailable, Inbound


@dataclass
class WireChannel:
    settled: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, delivery_tag: int) -> None:
        self.settled.append(("ack", delivery_tag, False))

    async def basic_nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self.settled.append(("nack", delivery_tag, requeue))

    async def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self.settled.append(("reject", delivery_tag, requeue))


def delivered(wire: WireChannel, tag: int = 7, redelivered: bool = True) -> DeliveredMessage:
    return DeliveredMessage(
        delivery=aiormq.spec.Basic.Deliver(
            consumer_tag="ctag",
            delivery_tag=tag,
            redelivered=redelivered,
            exchange="virtbus.commands",
            routing_key="h1",
        ),
        header=ContentHeader(
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                message_id="m1",
                correlation_id="c1",
                reply_to="amq.rabbitmq.reply-to.x",
                headers={"x-virtbus-key": "k1"},
            ),
            body_size=2,
        ),
        body=b"{}",
        channel=cast(AbstractChannel, wire),
    )


def bus() -> Bus:
    return Bus(["amqp://127.0.0.1/"], "h1", [])


def test_a_delivery_is_taken_as_it_arrived() -> None:
    wire = WireChannel()
    inbound = Inbound.of(delivered(wire))
    taken: dict[str, Any] = {
        "body": inbound.body,
        "message_id": inbound.message_id,
        "correlation_id": inbound.correlation_id,
        "reply_to": inbound.reply_to,
        "redelivered": inbound.redelivered,
        "exchange": inbound.exchange,
        "routing_key": inbound.routing_key,
        "headers": dict(inbound.headers),
        "content_type": inbound.content_type,
        "tag": inbound.receipt.delivery_tag,
    }
    assert taken == {
        "body": b"{}",
        "message_id": "m1",
        "correlation_id": "c1",
        "reply_to": "amq.rabbitmq.reply-to.x",
        "redelivered": True,
        "exchange": "virtbus.commands",
        "routing_key": "h1",
        "headers": {"x-virtbus-key": "k1"},
        "content_type": "application/json",
        "tag": 7,
    }
    assert inbound.receipt.channel is cast(AbstractChannel, wire)


async def test_an_answered_command_is_acked_once_however_often_it_is_settled() -> None:
    wire = WireChannel()
    inbound = Inbound.of(delivered(wire, tag=3))
    await bus().settle(inbound, accepted=True)
    await bus().settle(inbound, accepted=True)
    await bus().requeue(inbound)
    assert wire.settled == [("ack", 3, False)]


async def test_a_refused_command_without_a_reason_is_rejected_unrequeued() -> None:
    wire = WireChannel()
    inbound = Inbound.of(delivered(wire, tag=4))
    await bus().settle(inbound, accepted=False)
    assert wire.settled == [("reject", 4, False)]


async def test_a_command_given_back_is_not_settled_again() -> None:
    wire = WireChannel()
    inbound = Inbound.of(delivered(wire, tag=5, redelivered=False))
    await bus().requeue(inbound)
    await bus().settle(inbound, accepted=True)
    assert wire.settled == [("nack", 5, True)]
    assert inbound.redelivered is False


async def test_no_dead_letter_for_a_command_whose_channel_is_gone() -> None:
    wire = WireChannel(is_closed=True)
    inbound = Inbound.of(delivered(wire, tag=6))
    settling = bus()
    with pytest.raises(BusUnavailable, match="channel that delivered"):
        await settling.settle(inbound, accepted=False, reason="refused")
    assert wire.settled == []
    assert inbound.receipt.settled is False
