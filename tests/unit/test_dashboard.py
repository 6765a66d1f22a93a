"""The dashboard's access rules, over its real HTTP application with a stand-in fleet:
users file and bcrypt, sessions, CSRF, roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer

from agent.client import Connection
from agent.dashboard.access import Access, User, hash_password, read_users, write_users
from agent.dashboard.fleet import Fleet
from agent.dashboard.server import Dashboard, is_loopback
from agent.errors import VirtbusError
from schemas.codes import ErrorCode
from schemas.commands import GetStats
from schemas.replies import DomainInfo


class StandInFleet:
    def __init__(self) -> None:
        self.hosts: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"hosts": [], "broker": {"connected": True, "message": ""}}


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    write_users(
        path,
        {
            "ro": User("ro", "read-only", hash_password("ro-pass").encode()),
            "op": User("op", "operator", hash_password("op-pass").encode()),
        },
    )
    return path


async def client_for(access: Access) -> AsyncIterator[TestClient[Any, Any]]:
    dashboard = Dashboard(cast(Connection, None), cast(Fleet, StandInFleet()), access, False)
    async with TestClient(TestServer(dashboard.app()), cookie_jar=CookieJar(unsafe=True)) as c:
        yield c


@pytest.fixture
async def open_client() -> AsyncIterator[TestClient[Any, Any]]:
    async for client in client_for(Access(None)):
        yield client


@pytest.fixture
async def login_client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    async for client in client_for(Access(read_users(users_file(tmp_path)))):
        yield client


def test_the_users_file_keeps_hashes_and_roles(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    assert "op-pass" not in path.read_text() and "ro-pass" not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    access = Access(read_users(path))
    assert access.login("op", "op-pass") is not None
    assert access.login("op", "ro-pass") is None
    assert access.login("nobody", "op-pass") is None
    made = access.login("ro", "ro-pass")
    assert made is not None and not made[1].may_act


def test_a_users_file_with_an_unknown_role_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[users.x]\nrole = "admin"\npassword = "$2b$12$abc"\n')
    with pytest.raises(VirtbusError) as refused:
        read_users(path)
    assert refused.value.code == ErrorCode.INVALID_ARG


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


async def test_an_open_dashboard_gives_a_session_and_wants_its_csrf_token(
    open_client: TestClient[Any, Any],
) -> None:
    page = await open_client.get("/")
    assert page.status == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    session = await (await open_client.get("/api/session")).json()
    assert session["may_act"] and session["user"] == "local"
    action = {"action": "start", "host": "h1", "uuid": "x"}
    forged = await open_client.post("/api/action", json=action)
    assert forged.status == 403
    assert (await forged.json())["error"] == "access denied: missing or wrong CSRF token"
    wrong = await open_client.post("/api/action", json=action, headers={"X-CSRF-Token": "no"})
    assert wrong.status == 403
    as_form = await open_client.post(
        "/api/action", data={"action": "start"}, headers={"X-CSRF-Token": session["csrf"]}
    )
    assert as_form.status == 415


async def test_a_login_dashboard_refuses_strangers_and_read_only_actions(
    login_client: TestClient[Any, Any],
) -> None:
    assert (await login_client.get("/api/fleet")).status == 401
    assert (await login_client.get("/api/session")).status == 401
    bad = await login_client.post("/api/login", json={"user": "ro", "password": "op-pass"})
    assert bad.status == 401
    assert (await bad.json())["error"] == "authentication failed: wrong user name or password"
    good = await login_client.post("/api/login", json={"user": "ro", "password": "ro-pass"})
    assert good.status == 200
    assert (await login_client.get("/api/fleet")).status == 200
    session = await (await login_client.get("/api/session")).json()
    assert session == {**session, "role": "read-only", "may_act": False, "login": True}
    refused = await login_client.post(
        "/api/action",
        json={"action": "destroy", "host": "h1", "uuid": "x"},
        headers={"X-CSRF-Token": session["csrf"]},
    )
    assert refused.status == 403
    assert (await refused.json())["error"] == "access denied: user ro may not act (read-only)"
    assert (await login_client.get("/static/app.js")).status == 200
    assert (await login_client.get("/static/..%2fserver.py")).status == 404


class StandInConnection:
    async def call(self, host: str, op: type[GetStats], target: dict[str, str]) -> DomainInfo:
        assert (host, op, target) == ("h1", GetStats, {"uuid": "x"})
        return DomainInfo(state=1, max_mem_kib=4096, memory_kib=2048, nr_virt_cpu=1, cpu_time_ns=7)


async def test_statistics_come_from_the_statistics_call() -> None:
    conn = cast(Connection, StandInConnection())
    dashboard = Dashboard(conn, cast(Fleet, StandInFleet()), Access(None), False)
    async with TestClient(TestServer(dashboard.app()), cookie_jar=CookieJar(unsafe=True)) as c:
        await c.get("/")
        assert (await (await c.get("/api/session")).json())["stats"] is True
        answer = await c.get("/api/hosts/h1/domains/x/stats")
        assert (await answer.json())["stats"]["cpu_time_ns"] == 7
