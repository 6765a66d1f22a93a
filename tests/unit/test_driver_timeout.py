"""A Docker engine that takes the connection and never answers: each call ends with
OPERATION_TIMEOUT after the driver's bound (a stop's grace period added), and the calls
that last as long as their work are not cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.errors import VirtError
from agent.host.driver import DockerDriver
from schemas.codes import ErrorCode

BOUND_S = 0.2
WAIT_S = 10.0


Engine = Callable[[Mapping[str, object]], Awaitable[DockerDriver]]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """A driver (bound BOUND_S) on an engine that answers its API version and the given
    paths (path → JSON body) and nothing else."""
    never = asyncio.Event()
    servers: list[TestServer] = []
    drivers: list[DockerDriver] = []

    async def start(answers: Mapping[str, object]) -> DockerDriver:
        async def answer(request: web.Request) -> web.Response:
            if request.path in answers:
                return web.json_response(answers[request.path])
            await never.wait()
            raise AssertionError("unreachable")

        async def version(request: web.Request) -> web.Response:
            return web.json_response({"ApiVersion": "1.41"})

        app = web.Application()
        app.router.add_get("/version", version)
        app.router.add_route("*", "/{path:.*}", answer)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        url = f"tcp://127.0.0.1:{server.port}"
        drivers.append(DockerDriver("h1", url, pids_limit=64, call_timeout_s=BOUND_S))
        return drivers[-1]

    try:
        yield start
    finally:
        for driver in drivers:
            await driver.close()
        for server in servers:
            await server.close()


@pytest.fixture
async def driver(engine: Engine) -> DockerDriver:
    return await engine({})


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


INSPECTED = {"/v1.41/containers/abc/json": {"Id": "abc", "Config": {"Tty": False}}}
AFTER_INSPECT: dict[str, Call] = {
    "output": lambda d: d.output("abc", 1024),
    "attach": lambda d: d.attach("abc"),
}


@pytest.mark.parametrize("call", AFTER_INSPECT.values(), ids=AFTER_INSPECT.keys())
async def test_a_console_call_the_engine_leaves_unanswered_is_operation_timeout(
    engine: Engine, call: Call
) -> None:
    """aiodocker bounds only the inspect before these, as calls that stream."""
    driver = await engine(INSPECTED)
    with pytest.raises(VirtError) as caught:
        await asyncio.wait_for(call(driver), WAIT_S)
    assert caught.value.code is ErrorCode.OPERATION_TIMEOUT
