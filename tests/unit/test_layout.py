"""The shape of the code: one error tree, typed commands in the client and the CLI, and a
``virtbus --help`` that loads no broker, Docker or HTTP library."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import agent
import schemas
from agent.cli.config import CliConfig
from agent.errors import BrokerUnreachable, NotConnected, OperationTimeout, ReplyError
from schemas.codes import ErrorCode
from schemas.commands import OPS
from schemas.errors import VirtbusError
from schemas.replies import ErrorBody

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [
        info.name
        for info in pkgutil.walk_packages(path, prefix)
        if not info.name.endswith("__main__")
    ]


def test_every_exception_of_the_project_is_a_virtbus_error() -> None:
    outside: list[str] = []
    for name in _modules(agent) + _modules(schemas):
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            own = cls.__module__ == name and issubclass(cls, BaseException)
            if own and not issubclass(cls, VirtbusError):
                outside.append(f"{name}.{cls.__name__}")
    assert outside == []


def test_client_errors_keep_their_builtin_base_and_carry_an_error_code() -> None:
    timeout = OperationTimeout("no reply from host h1 to host.ping within 1 s", "h1")
    assert isinstance(timeout, TimeoutError) and timeout.code is ErrorCode.OPERATION_TIMEOUT
    assert (
        str(timeout) == "Timed out during operation: no reply from host h1 to host.ping within 1 s"
    )
    unreachable = BrokerUnreachable("cannot reach the broker: refused")
    assert isinstance(unreachable, ConnectionError)
    assert unreachable.code is ErrorCode.OPERATION_FAILED
    assert isinstance(NotConnected(), RuntimeError)
    replied = ReplyError(ErrorBody.of(ErrorCode.NO_DOMAIN, "Domain not found: web"), "h1")
    assert (replied.code, replied.detail, replied.host) == (ErrorCode.NO_DOMAIN, "web", "h1")
    unknown = ReplyError(ErrorBody(code="NEWER", vir_error=999, message="newer: x"), "h1")
    assert (unknown.code, unknown.vir_error, unknown.message) == (
        ErrorCode.INTERNAL_ERROR,
        999,
        "newer: x",
    )


@pytest.mark.parametrize(
    "room",
    ["agent/host", "agent/client", "agent/cli", "agent/gateway", "agent/admin", "agent/dashboard"],
)
def test_no_op_name_is_spelled_outside_schemas(room: str) -> None:
    paths = sorted(ROOT.glob(f"{room}/**/*.py")) + sorted(ROOT.glob(f"{room}.py"))
    assert paths
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value}"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in OPS
    ]
    assert spelled == []


def test_help_loads_no_broker_docker_or_http_library() -> None:
    probe = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('aio_pika', 'aiormq', 'aiodocker', 'aiohttp', 'agent.host', 'agent.client')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stderr.strip() == "[]"
    assert "usage: virtbus" in ran.stdout


def test_cli_settings_come_from_virtbus_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIRTBUS_AMQP_URL", "amqp://u:p@broker:5672/")
    monkeypatch.setenv("VIRTBUS_MANAGEMENT_URL", "http://admin:pw@broker:15672/")
    monkeypatch.delenv("VIRTBUS_KNOWN_HOSTS", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = CliConfig()
    assert config.amqp_url == "amqp://u:p@broker:5672/"
    assert config.management_url == "http://admin:pw@broker:15672/"
    assert config.known_hosts_path == tmp_path / "virtbus" / "hosts.json"


def _imports(path: Path) -> set[str]:
    """The project modules a module imports when it is loaded (not the ones it imports
    only for type checking or inside a function)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("agent", "schemas")}


def _graph() -> dict[str, set[str]]:
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for room in ("agent", "schemas")
        for path in (ROOT / room).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = _imports(path) & modules.keys()
        # ``from agent.cli import output`` loads the submodule; a package's own
        # ``__init__`` is loaded before any of its modules, which is no cycle
        graph[name] = {
            target
            for target in targets
            if not any(other.startswith(target + ".") for other in targets)
            and not name.startswith(target + ".")
            and target != name
        }
    return graph


def test_the_host_agent_imports_no_other_program() -> None:
    others = ("agent.client", "agent.cli", "agent.gateway", "agent.admin")
    crossing = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.startswith("agent.host")
        for target in targets
        if target.startswith(others)
    )
    assert crossing == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
