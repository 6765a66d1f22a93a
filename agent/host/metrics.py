"""What an operator watches: Prometheus metrics and a readiness endpoint.

Each agent keeps its metrics in a registry of its own, so several agents can share a
process (as the fleet benchmarks do). Gauges that describe the present (outbox size,
connections, domains by state) are read at scrape time, never kept in step by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.signing import REASONS

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(frozen=True)
class Readings:
    """The present, read when scraped."""

    broker_connected: Callable[[], bool]
    docker_connected: Callable[[], bool]
    events_pending: Callable[[], int]
    domains_by_state: Callable[[], Mapping[str, int]]
    store_writable: Callable[[], bool]


class _Present(Collector):
    def __init__(self, readings: Readings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        readings = self._readings
        yield GaugeMetricFamily(
            "virtbus_broker_connected",
            "1 while the agent is connected to the broker",
            value=int(readings.broker_connected()),
        )
        yield GaugeMetricFamily(
            "virtbus_docker_connected",
            "1 while the agent follows the Docker engine's event stream",
            value=int(readings.docker_connected()),
        )
        yield GaugeMetricFamily(
            "virtbus_events_pending",
            "Events in the outbox, not yet confirmed by the broker",
            value=readings.events_pending(),
        )
        yield GaugeMetricFamily(
            "virtbus_store_writable",
            "0 from a failed write to the state store (a full disk) until one succeeds",
            value=int(readings.store_writable()),
        )
        domains = GaugeMetricFamily("virtbus_domains", "Domains by libvirt state", labels=["state"])
        for state, count in sorted(readings.domains_by_state().items()):
            domains.add_metric([state], count)
        yield domains


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "virtbus_commands",
            "Commands answered, by op and outcome (ok, or the error code)",
            ["op", "outcome"],
            registry=self.registry,
        )
        self.denied = Counter(
            "virtbus_commands_denied",
            "Commands refused by the host policy (OPERATION_DENIED), by op and the rule that "
            "refused (image, mount, network, memory, vcpus, pids)",
            ["op", "reason"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "virtbus_command_duration_seconds",
            "Time from a command's turn to its reply, by op",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "virtbus_events_published",
            "Events confirmed by the broker, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "virtbus_auth_failures",
            "Commands refused as not authentic (AUTH_FAILED), by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:
            self.auth_failures.labels(reason)
        self.store_failures = Counter(
            "virtbus_store_write_failures",
            "Writes the state store could not take (a full disk, an I/O error)",
            registry=self.registry,
        )
        self.reconnects = Counter(
            "virtbus_reconnects",
            "Connections re-established, by peer (broker or docker)",
            ["peer"],
            registry=self.registry,
        )

    def read(self, readings: Readings) -> None:
        self.registry.register(_Present(readings))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` for Prometheus and ``/health``: 200 when ready, 503 when not."""

    def __init__(
        self, metrics: Metrics, health: Callable[[], dict[str, bool]], host: str, port: int
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/health", self._serve_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _serve_health(self, request: web.Request) -> web.Response:
        checks = self._health()
        ready = all(checks.values())
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, **checks}),
            content_type="application/json",
        )
