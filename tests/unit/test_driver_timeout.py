"""A Docker engine that takes the connection and never answers: each call ends with
OPERATION_TIMEOUT after the driver's bound (a stop's grace period added), and the calls
that last as long as their work are not cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.errors import VirtError
from agent.host.driver import DockerDriver
from schemas.codes import ErrorCode

BOUND_S = 0.2
WAIT_S = 10.0


@pytest.fixture
async def silent_engine() -> AsyncIterator[str]:
    """The URL of an engine that tells its API version and answers nothing else."""
    never = asyncio.Event()

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.41"})

    async def silence(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_route("*", "/{path:.*}", silence)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"tcp://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
async def driver(silent_engine: str) -> AsyncIterator[DockerDriver]:
    driver = DockerDriver("h1", silent_engine, pids_limit=64, call_timeout_s=BOUND_S)
    yield driver
    await driver.close()


Call = Callable[[DockerDriver], Awaitable[object]]

BOUNDED: dict[str, Call] = {
    "pause": lambda d: d.pause("abc"),
    "unpause": lambda d: d.unpause("abc"),
    "start": lambda d: d.start("abc"),
    "kill": lambda d: d.kill("abc"),
    "remove": lambda d: d.remove("abc"),
    "observe": lambda d: d.observe("abc"),
    "observe_all": lambda d: d.observe_all(),
    "default_command": lambda d: d.default_command("busybox:latest", {}),
    "remove_snapshot_image": lambda d: d.remove_snapshot_image("s1"),
    "engine": lambda d: d.engine(),
}


@pytest.mark.parametrize("call", BOUNDED.values(), ids=BOUNDED.keys())
async def test_a_call_the_engine_does_not_answer_is_operation_timeout(
    driver: DockerDriver, call: Call
) -> None:
    with pytest.raises(VirtError) as caught:
        await asyncio.wait_for(call(driver), WAIT_S)
    assert caught.value.code is ErrorCode.OPERATION_TIMEOUT
    assert caught.value.detail == (
        f"the Docker engine did not answer within {BOUND_S:g} s; the call may still take effect"
    )


async def test_a_stop_is_given_its_grace_period_on_top_of_the_bound(
    driver: DockerDriver,
) -> None:
    grace_s = 1
    stopping = asyncio.ensure_future(driver.stop("abc", grace_s))
    done, _ = await asyncio.wait([stopping], timeout=grace_s / 2)
    assert not done, "the stop was cut before its grace period ran out"
    with pytest.raises(VirtError) as caught:
        await asyncio.wait_for(stopping, WAIT_S)
    assert caught.value.code is ErrorCode.OPERATION_TIMEOUT
    assert f"within {BOUND_S + grace_s:g} s" in caught.value.detail


UNBOUNDED: dict[str, Call] = {
    "wait_stopped": lambda d: d.wait_stopped("abc"),
    "commit": lambda d: d.commit("abc", "s1", {}),
}


@pytest.mark.parametrize("call", UNBOUNDED.values(), ids=UNBOUNDED.keys())
async def test_a_call_that_lasts_as_long_as_its_work_is_not_cut(
    driver: DockerDriver, call: Call
) -> None:
    waiting = asyncio.ensure_future(call(driver))
    done, _ = await asyncio.wait([waiting], timeout=BOUND_S * 5)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not done
