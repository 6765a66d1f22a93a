"""The dashboard's HTTP side (aiohttp): the page and its assets, a JSON API, the live
updates as Server-Sent Events, and the actions.

Every request but the page, its assets, the login and the session probe needs a session
(a cookie); every POST also needs the session's CSRF token in ``X-CSRF-Token`` and a JSON
body, which a page of another origin cannot send without the browser asking first. Each
action is logged (``virtbus.dashboard.audit``) with who did it and how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from agent.client import BroadcastResult, Connection, VirtbusError
from agent.dashboard.access import Access, Session
from agent.dashboard.fleet import Fleet, record_json
from schemas.codes import ErrorCode
from schemas.commands import (
    CommandBase,
    Create,
    Destroy,
    GetInfo,
    GetStats,
    GetXmlDesc,
    Reboot,
    Resume,
    SetAutostart,
    Shutdown,
    Suspend,
    Undefine,
)
from schemas.replies import DomainInfo, DomainXml

log = logging.getLogger(__name__)
audit = logging.getLogger("virtbus.dashboard.audit")
COOKIE = "virtbus_dashboard"
ACTIONS: dict[str, type[CommandBase]] = {
    "start": Create,
    "shutdown": Shutdown,
    "destroy": Destroy,
    "reboot": Reboot,
    "suspend": Suspend,
    "resume": Resume,
    "autostart": SetAutostart,
    "undefine": Undefine,
}
ACTION_TIMEOUT_S = 30.0
BROADCAST_TIMEOUT_S = 10.0
HEARTBEAT_S = 15.0
STATIC = files("agent.dashboard") / "static"
SESSION_KEY = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_body(error: VirtbusError) -> dict[str, Any]:
    return {"error": error.message, "code": int(error.code), "host": getattr(error, "host", None)}


def refused(status: int, code: ErrorCode, detail: str) -> web.Response:
    message = f"{code.prefix}: {detail}"
    return web.json_response({"error": message, "code": int(code)}, status=status)


class Dashboard:
    """The web application over one Fleet and one Connection."""

    def __init__(self, conn: Connection, fleet: Fleet, access: Access, secure: bool) -> None:
        self.conn = conn
        self.fleet = fleet
        self.access = access
        self.secure = secure

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/static/{name}", self.static),
                web.get("/api/session", self.session),
                web.post("/api/login", self.login),
                web.post("/api/logout", self.logout),
                web.get("/api/fleet", self.snapshot),
                web.get("/api/hosts/{host}", self.host),
                web.get("/api/hosts/{host}/domains/{uuid}", self.domain),
                web.get("/api/hosts/{host}/domains/{uuid}/stats", self.stats),
                web.get("/api/events", self.events),
                web.get("/api/stream", self.stream),
                web.post("/api/action", self.action),
            ]
        )
        return app

    # ------------------------------------------------------------ access --
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path in ("/", "/api/session", "/api/login") or request.path.startswith(
            "/static/"
        )
        session = self.access.session(request.cookies.get(COOKIE))
        if session is None and not public:
            return refused(401, ErrorCode.AUTH_FAILED, "log in first")
        if request.method == "POST":
            if request.content_type != "application/json":
                return refused(415, ErrorCode.INVALID_ARG, "a JSON body is required")
            if request.path != "/api/login" and (
                session is None
                or not self.access.csrf_ok(session, request.headers.get("X-CSRF-Token"))
            ):
                return refused(403, ErrorCode.ACCESS_DENIED, "missing or wrong CSRF token")
        if session is not None:
            request[SESSION_KEY] = session
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; frame-ancestors 'none'",
        )
        return response

    def _set_cookie(self, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="Strict", secure=self.secure, path="/"
        )

    async def index(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")
        if self.access.open and self.access.session(request.cookies.get(COOKIE)) is None:
            token, _ = self.access.anonymous()
            self._set_cookie(response, token)
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        kind = next((k for suffix, k in kinds.items() if name.endswith(suffix)), None)
        asset = STATIC / name
        if kind is None or "/" in name or not asset.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=asset.read_bytes(), content_type=kind)

    async def session(self, request: web.Request) -> web.StreamResponse:
        session = request.get(SESSION_KEY)
        if session is None:
            return refused(401, ErrorCode.AUTH_FAILED, "log in first")
        return web.json_response(
            {
                "user": session.user,
                "role": session.role,
                "may_act": session.may_act,
                "csrf": session.csrf,
                "stats": True,
                "login": not self.access.open,
            }
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name, password = str(body.get("user", "")), str(body.get("password", ""))
        made = await asyncio.to_thread(self.access.login, name, password)
        if made is None:
            audit.warning("login refused for user=%s from %s", name, request.remote)
            return refused(401, ErrorCode.AUTH_FAILED, "wrong user name or password")
        token, session = made
        audit.info("login user=%s role=%s from %s", session.user, session.role, request.remote)
        response = web.json_response({"user": session.user, "role": session.role})
        self._set_cookie(response, token)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.access.logout(request.cookies.get(COOKIE))
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------- views --
    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.fleet.snapshot())

    async def host(self, request: web.Request) -> web.StreamResponse:
        view = self.fleet.hosts.get(request.match_info["host"])
        if view is None:
            return refused(404, ErrorCode.INVALID_ARG, "no such host in the fleet")
        return web.json_response(
            {
                "host": view.json(),
                "domains": [record_json(r) for r in view.domains.values()],
            }
        )

    async def domain(self, request: web.Request) -> web.StreamResponse:
        host, key = request.match_info["host"], request.match_info["uuid"]
        target = {"uuid": key}
        shown: dict[str, Any] = {"host": host, "uuid": key}
        view = self.fleet.hosts.get(host)
        record = view.domains.get(key) if view is not None else None
        if record is not None:
            shown["record"] = record_json(record)
        try:
            info = await self.conn.call(host, GetInfo, target=target)
            xml = await self.conn.call(host, GetXmlDesc, target=target)
        except VirtbusError as error:
            return web.json_response(error_body(error), status=502)
        if isinstance(info, DomainInfo):
            shown["info"] = info.model_dump(mode="json")
        if isinstance(xml, DomainXml):
            shown["xml"] = xml.xml
        shown["events"] = [
            e for e in self.fleet.recent if e.get("host") == host and _uuid_of(e) == key
        ][-100:]
        return web.json_response(shown)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        host, key = request.match_info["host"], request.match_info["uuid"]
        try:
            result = await self.conn.call(host, GetStats, target={"uuid": key})
        except VirtbusError as error:
            return web.json_response(error_body(error), status=502)
        return web.json_response({"stats": _flat(result.model_dump(mode="json"))})

    async def events(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"events": list(self.fleet.recent)})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: a ``snapshot`` first, then each change as it happens."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        queue = self.fleet.subscribe()
        try:
            first = {
                "type": "snapshot",
                **self.fleet.snapshot(),
                "events": list(self.fleet.recent)[-500:],
            }
            await response.write(f"data: {json.dumps(first)}\n\n".encode())
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                await response.write(f"data: {message}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.fleet.unsubscribe(queue)
        return response

    # ----------------------------------------------------------- actions --
    async def action(self, request: web.Request) -> web.StreamResponse:
        session: Session = request[SESSION_KEY]
        body = await request.json()
        verb = str(body.get("action", ""))
        where = _where(body)
        if not session.may_act:
            audit.warning("refused %s on %s: user=%s is read-only", verb, where, session.user)
            return refused(
                403, ErrorCode.ACCESS_DENIED, f"user {session.user} may not act (read-only)"
            )
        model = ACTIONS.get(verb)
        if model is None:
            return refused(400, ErrorCode.INVALID_ARG, f"unknown action {verb!r}")
        args = {"autostart": bool(body.get("autostart", True))} if model is SetAutostart else None
        audit.info("user=%s %s on %s", session.user, verb, where)
        try:
            if body.get("host"):
                result = await self.conn.call(
                    str(body["host"]),
                    model,
                    args,
                    target={"uuid": str(body.get("uuid", ""))},
                    timeout_s=ACTION_TIMEOUT_S,
                )
                audit.info("user=%s %s on %s: done", session.user, verb, where)
                return web.json_response({"result": result.model_dump(mode="json")})
            group = str(body["group"]) if body.get("group") else None
            gathered = await self.conn.broadcast(
                model,
                args,
                target={"name": str(body.get("domain", ""))},
                group=group,
                expect=self._expected(group),
                timeout_s=BROADCAST_TIMEOUT_S,
            )
        except VirtbusError as error:
            audit.info("user=%s %s on %s: %s", session.user, verb, where, error.message)
            return web.json_response(error_body(error), status=502)
        report = gather_report(gathered)
        audit.info(
            "user=%s %s on %s: %d answered, %d failed, %d missing",
            session.user,
            verb,
            where,
            len(report["answered"]),
            len(report["failed"]),
            len(report["missing"]),
        )
        return web.json_response({"report": report})

    def _expected(self, group: str | None) -> set[str]:
        """The hosts a broadcast should hear from: every host known in the group (or the
        fleet) that did not say goodbye."""
        return {
            view.status.host
            for view in self.fleet.hosts.values()
            if view.status.state != "offline" and (group is None or group in view.status.groups)
        }


def gather_report(gathered: BroadcastResult) -> dict[str, Any]:
    return {
        "answered": sorted(h for h, reply in gathered.replies.items() if reply.ok),
        "failed": {
            host: reply.error.message
            for host, reply in sorted(gathered.failed.items())
            if reply.error is not None
        },
        "missing": sorted(gathered.missing),
        "elapsed_s": round(gathered.elapsed_s, 3),
    }


def _where(body: dict[str, Any]) -> str:
    if body.get("host"):
        return f"domain {body.get('uuid')} of host {body['host']}"
    scope = f"group {body['group']}" if body.get("group") else "the fleet"
    return f"domain {body.get('domain')!r} on {scope}"


def _uuid_of(event: dict[str, Any]) -> str | None:
    domain = event.get("domain")
    return str(domain.get("uuid")) if isinstance(domain, dict) else None


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested statistics as libvirt's dotted keys."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


async def serve(
    dashboard: Dashboard, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> web.AppRunner:
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, shutdown_timeout=1.0)
    await site.start()
    return runner


async def run_forever(runner: web.AppRunner) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await runner.cleanup()
