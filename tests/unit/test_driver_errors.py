"""Docker's errors become libvirt's in one place (``agent.driver.virt_error``), row by
row of ``DOCKER_ERRORS``, with Docker's own message."""

from __future__ import annotations

import aiodocker
import aiohttp
import pytest

from agent.host.driver import DOCKER_ERRORS, virt_error
from schemas.codes import ErrorCode

CASES = [
    (409, "Container abc is already paused", ErrorCode.OPERATION_INVALID),
    (500, "Container abc is not running", ErrorCode.OPERATION_INVALID),
    (
        500,
        "Container abc is paused, unpause the container before stopping or killing",
        ErrorCode.OPERATION_INVALID,
    ),
    (400, "invalid reference format", ErrorCode.INVALID_ARG),
    (404, "No such container: abc", ErrorCode.OPERATION_FAILED),
    (500, "the storage driver failed", ErrorCode.OPERATION_FAILED),
]


@pytest.mark.parametrize(("status", "message", "code"), CASES)
def test_a_docker_answer_is_the_libvirt_error_of_its_row(
    status: int, message: str, code: ErrorCode
) -> None:
    error = virt_error(aiodocker.DockerError(status, message))
    assert (error.code, error.detail) == (code, message)


def test_every_row_of_the_table_is_tested_first() -> None:
    first_matches = {
        next((rule for rule in DOCKER_ERRORS if rule.matches(aiodocker.DockerError(s, m))), None)
        for s, m, _ in CASES
    }
    assert set(DOCKER_ERRORS) <= first_matches


@pytest.mark.parametrize(
    "failure",
    [
        aiohttp.ClientConnectionError("connection refused"),
        ConnectionRefusedError("no socket"),
    ],
)
def test_an_engine_out_of_reach_is_operation_failed(
    failure: aiohttp.ClientError | OSError,
) -> None:
    error = virt_error(failure, 120)
    assert error.code is ErrorCode.OPERATION_FAILED
    assert error.detail.startswith("cannot reach the Docker engine")


@pytest.mark.parametrize(
    "failure",
    [TimeoutError(), aiohttp.ServerTimeoutError("read"), aiohttp.ConnectionTimeoutError()],
)
def test_an_engine_that_does_not_answer_is_operation_timeout(
    failure: aiohttp.ClientError | OSError,
) -> None:
    error = virt_error(failure, 2.5)
    assert error.code is ErrorCode.OPERATION_TIMEOUT
    assert error.detail == (
        "the Docker engine did not answer within 2.5 s; the call may still take effect"
    )
