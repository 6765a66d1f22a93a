"""B10: the dashboard over a fleet of 1,000 hosts (agents over the fake driver, as B8).

The dashboard (``agent.dashboard``) starts against the fleet: it gathers the hosts'
facts and their domains in two broadcasts. Then the fleet view is loaded: over HTTP (the
page, its assets, the session and the first Server-Sent Events message, which carries
the whole fleet) and, where Chromium is installed, in headless Chromium from navigation
to the fleet table drawn with every host. Goal: the fleet view loads in ≤ 1 s.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from typing import Any

import aiohttp

from agent.client import connect
from agent.dashboard.access import Access
from agent.dashboard.fleet import Fleet as FleetModel
from agent.dashboard.server import Dashboard, serve
from bench.core import BenchResult, Context
from bench.fleetrun import Fleet, choose_connections
from bench.rpc import RpcClient

QUEUE_TYPE = "classic"
LOAD_GOAL_S = 1.0
DISCOVER_S = 10.0
DISCOVER_ROUNDS = 5
PORT = 18089
ROUNDS = 5
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


async def http_load(base: str, size: int) -> float:
    """Seconds to fetch the page, its assets, the session and the first SSE message
    (the fleet), with at least ``size`` hosts in it."""
    jar = aiohttp.CookieJar(unsafe=True)
    began = time.perf_counter()
    async with aiohttp.ClientSession(cookie_jar=jar, read_bufsize=2**22) as http:
        for path in ("/", "/static/app.js", "/static/style.css", "/api/session"):
            async with http.get(base + path) as response:
                response.raise_for_status()
                await response.read()
        async with http.get(base + "/api/stream") as stream:
            line = await stream.content.readline()
            snapshot: dict[str, Any] = json.loads(line.decode().removeprefix("data: "))
    elapsed = time.perf_counter() - began
    shown = len(snapshot["hosts"])
    if shown < size:
        raise RuntimeError(f"the fleet view showed {shown} of {size} hosts")
    return elapsed


def browser_load(base: str, size: int) -> list[float]:
    """Seconds from navigation to the fleet table drawn with ``size`` hosts, in headless
    Chromium (a fresh profile), per round."""
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="virtbus-b9-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    )
    times = []
    try:
        for round_ in range(ROUNDS):
            driver.get(f"{base}/?round={round_}#/")  # a new document each round
            WebDriverWait(driver, 30, poll_frequency=0.02).until(
                lambda d: (
                    d.execute_script("return document.querySelectorAll('#fleet tbody tr').length")
                    >= size
                )
            )
            drawn = driver.execute_script("return window.fleetDrawnAt")
            times.append(float(drawn) / 1000)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return times


async def run(ctx: Context, client: RpcClient) -> BenchResult:
    size, workers = ctx.scale.b8_hosts, ctx.scale.b8_workers
    result = BenchResult("B10", f"dashboard over {size:,} hosts")
    shared, how = await choose_connections(size, workers)
    fleet = await Fleet.start(ctx, "d", size, workers, QUEUE_TYPE, shared)
    ctx.log(f"B9 fleet of {size} ready in {fleet.startup_s:.1f} s ({how})")
    try:
        async with connect(ctx.amqp_url, timeout_s=30) as conn:
            model = FleetModel(conn, list_timeout_s=30)
            began = time.perf_counter()
            await model.start(discover_s=DISCOVER_S)
            started_s = time.perf_counter() - began
            # the fleet runs without heartbeats: hosts that missed the first gathering
            # on a busy machine are asked again
            for _ in range(DISCOVER_ROUNDS):
                if all(host in model.hosts for host in fleet.hosts):
                    break
                await model.registry.discover(DISCOVER_S)
                await model.list_fleet()
            known = sum(1 for host in fleet.hosts if host in model.hosts)
            runner = await serve(
                Dashboard(conn, model, Access(None), False), "127.0.0.1", PORT, None
            )
            base = f"http://127.0.0.1:{PORT}"
            try:
                http = [await http_load(base, size) for _ in range(ROUNDS)]
                chromium = (
                    await asyncio.to_thread(browser_load, base, size)
                    if shutil.which("chromedriver")
                    else []
                )
            finally:
                await runner.cleanup()
                await model.stop()
    finally:
        await fleet.stop()
    worst_http = max(http)
    result.metrics = {
        "hosts": size,
        "hosts_known": known,
        "dashboard_start_s": started_s,
        "http_load_s": http,
        "chromium_load_s": chromium,
    }
    result.goal(
        f"fleet view load over HTTP (page, assets, session, fleet snapshot), worst of {ROUNDS}",
        worst_http,
        "s",
        f"≤ {LOAD_GOAL_S} s",
        worst_http <= LOAD_GOAL_S,
        f"ratio {worst_http / LOAD_GOAL_S:.2f} of the goal",
    )
    if chromium:
        worst = max(chromium)
        result.goal(
            f"fleet view drawn in headless Chromium with every host, worst of {ROUNDS}",
            worst,
            "s",
            f"≤ {LOAD_GOAL_S} s",
            worst <= LOAD_GOAL_S,
            f"ratio {worst / LOAD_GOAL_S:.2f} of the goal",
        )
    result.table(
        f"B10 dashboard over {size:,} hosts",
        ["measure", "value"],
        [
            ["hosts in the dashboard after start", f"{known:,} of {size:,}"],
            [
                f"dashboard start (facts gathered for {DISCOVER_S:g} s, then domains listed)",
                f"{started_s:.2f} s",
            ],
            ["fleet view over HTTP, per load", " / ".join(f"{s:.3f}" for s in http) + " s"],
            [
                "fleet view in Chromium (navigation → table drawn)",
                " / ".join(f"{s:.3f}" for s in chromium) + " s" if chromium else "no Chromium",
            ],
        ],
    )
    return result
