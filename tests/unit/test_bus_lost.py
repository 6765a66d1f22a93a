"""A wait that aiormq fails with CancelledError because it gave up on the connection is
a lost broker to the bus's callers; only the cancellation of the waiting task is one."""

from __future__ import annotations

import asyncio

import pytest

from agent.host.bus import BusUnavailable, _lost_is_unavailable


async def wait_under_guard(confirm: asyncio.Future[None]) -> None:
    with _lost_is_unavailable():
        await confirm


async def test_a_confirm_failed_with_cancelled_error_is_unavailable() -> None:
    confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(wait_under_guard(confirm))
    await asyncio.sleep(0)
    confirm.set_exception(asyncio.CancelledError())
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(waiter, 5)


async def test_cancelling_the_waiting_task_still_cancels_it() -> None:
    confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(wait_under_guard(confirm))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    assert waiter.cancelled()
