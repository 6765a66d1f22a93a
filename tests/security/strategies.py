"""Hostile command bodies for hypothesis: raw bytes, arbitrary JSON, and commands that
look right but carry what an attacker would try (privileged fields, host paths, other
images, the host network, huge limits, NUL bytes, traversal, deep nesting)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from schemas.commands import OPS

NAMES = ("f0", "f1", "f2")
"""The names valid commands use: few, so the domains they create stay few."""
ALLOWED_IMAGE = "virtbus-test:latest"

PRIVILEGED: dict[str, Any] = {
    "privileged": True,
    "cap_add": ["SYS_ADMIN", "ALL"],
    "devices": ["/dev/mem:/dev/mem"],
    "pid_mode": "host",
    "ipc_mode": "host",
    "uts_mode": "host",
    "userns_mode": "host",
    "cgroupns_mode": "host",
    "security_opt": ["seccomp=unconfined"],
    "sysctls": {"kernel.modprobe": "/tmp/x"},
    "binds": ["/:/host:rw"],
    "volumes_from": ["other"],
    "HostConfig": {"Privileged": True, "PidMode": "host"},
}
HOST_PATHS = (
    "/",
    "/etc",
    "/root",
    "/proc",
    "/sys",
    "/dev",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
    "/tmp/../etc",
    "/./etc/",
    "//etc",
    "etc",
    "../etc",
    "/etc\x00/x",
    "/etc\n",
    "",
)
HOSTILE_STRINGS = (
    "",
    "..",
    "../../etc/passwd",
    "a/b",
    "x" * 300,
    "\x00",
    "a\x00b",
    "\ud800",
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "%s%n",
    "host",
    "container:other",
    "\u202e",
    "ß" * 70,
)
HOSTILE_NUMBERS = (
    -1,
    0,
    1,
    2**31,
    2**63,
    2**64 + 1,
    10**400,
    1.5,
    float("nan"),
    True,
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(HOSTILE_STRINGS)
    | st.sampled_from(HOSTILE_NUMBERS[:-2])
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
hostile = st.sampled_from(HOSTILE_STRINGS) | st.sampled_from(HOSTILE_NUMBERS) | json_values


Hostility = int
"""Percent chance that a field takes a hostile value instead of a plausible one."""


@st.composite
def _field(draw: st.DrawFn, plausible: st.SearchStrategy[Any], hostility: Hostility) -> Any:
    if draw(st.integers(0, 99)) < hostility:
        return draw(hostile)
    return draw(plausible)


def _allowed_mostly(allowed: Any, *others: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from((allowed,) * len(others) + others)


mounts = st.lists(
    st.fixed_dictionaries(
        {"source": st.sampled_from(HOST_PATHS), "target": st.just("/m")},
        optional={"readonly": st.booleans()},
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def specs(draw: st.DrawFn, hostility: Hostility) -> dict[str, Any]:
    """A domain spec: within the test policy about half the time when ``hostility`` is
    0, outside it in one way or another otherwise."""

    def field(plausible: st.SearchStrategy[Any]) -> Any:
        return draw(_field(plausible, hostility))

    spec: dict[str, Any] = {
        "name": field(st.sampled_from(NAMES)),
        "image": field(
            _allowed_mostly(
                ALLOWED_IMAGE,
                "busybox:latest",
                "alpine",
                "registry.example:5000/evil/root:latest",
                "virtbus-test@sha256:" + "0" * 64,
                "sha256:" + "0" * 64,
                "Virtbus-Test",
            )
        ),
        "command": field(st.just(["sleep", "3600"])),
        "memory_kib": field(_allowed_mostly(65536, 8192, 131072, 131073, 2**40)),
        "vcpus": field(_allowed_mostly(1, 2, 4096)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "mounts": mounts,
        "network": st.sampled_from(("none", "bridge", "default", "host")),
        "pids_limit": st.sampled_from((16, 256, 257, 4_194_305)),
        "env": st.dictionaries(
            st.sampled_from(("A", "PATH", "LD_PRELOAD", "A=B", "1X", "")),
            st.sampled_from(("x", "/tmp/evil.so", "a\x00b")),
            max_size=2,
        ),
        "workdir": st.sampled_from(HOST_PATHS),
        "user": st.sampled_from(("0", "root", "0:0", "nobody", "1000:1000")),
        "uuid": st.uuids().map(str),
        "on_crash": st.sampled_from(("destroy", "restart")),
        "autostart": st.booleans(),
        "metadata": st.dictionaries(st.sampled_from(("owner", "..", "")), st.text(max_size=8)),
        "extra": st.sampled_from(sorted(PRIVILEGED)),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)), max_size=2)):
        if key == "extra":
            extra = draw(optional[key])
            spec[extra] = PRIVILEGED[extra]
        else:
            spec[key] = field(optional[key])
    return spec


def _args(op: str, hostility: Hostility) -> st.SearchStrategy[dict[str, Any]]:
    def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return _field(plausible, hostility)

    if op in ("domain.define", "domain.create_xml"):
        return st.fixed_dictionaries({"spec": specs(hostility)})
    if op == "domain.set_memory":
        return st.fixed_dictionaries({"memory_kib": field(st.sampled_from((8192, 65536, 131073)))})
    if op == "domain.set_tuning":
        return st.fixed_dictionaries(
            {
                "cpu_shares": field(st.sampled_from((1, 512, 262145))),
                "swap_hard_limit_kib": field(st.sampled_from((8192, 2**41))),
                "live": field(st.booleans()),
            }
        )
    if op == "domain.set_vcpus":
        return st.fixed_dictionaries({"vcpus": field(st.sampled_from((1, 2, 4096)))})
    if op == "domain.shutdown":
        return st.fixed_dictionaries({"timeout_s": field(st.integers(0, 1))})
    if op == "domain.rename":
        return st.fixed_dictionaries({"new_name": field(st.sampled_from(NAMES))})
    if op == "domain.set_autostart":
        return st.fixed_dictionaries({"autostart": field(st.booleans())})
    if op == "host.login":
        return st.fixed_dictionaries(
            {
                "registry": field(st.just("registry.example:5000")),
                "username": field(st.just("u")),
                "password": field(st.just("pw")),
            }
        )
    if hostility:
        return st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.just({})


# reboot and shutdown of a domain wait on its processes; the live agent gets few of them
_OPS = tuple(op for op in OPS if op not in ("domain.reboot",))


DEFINES = ("domain.define", "domain.create_xml")


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    """Clean commands a third of the time, one hostile part in about one field of ten a
    third of the time, and chaos (hostile fields, envelope and op) otherwise."""
    hostility = draw(st.sampled_from((0, 10, 40)))
    ops = st.sampled_from(DEFINES) | st.sampled_from(_OPS)
    if hostility == 40:
        ops = ops | st.sampled_from(("domain.exec", "host.shell", ""))
    op = draw(ops)
    document: dict[str, Any] = {"v": 1, "id": f"h-{draw(st.uuids()).hex}", "op": op}
    if op.startswith("domain.") and op not in DEFINES:
        document["target"] = draw(
            st.fixed_dictionaries({"name": _field(st.sampled_from(NAMES), hostility)})
            | st.fixed_dictionaries({"id": _field(st.integers(1, 2**31), hostility)})
            | st.fixed_dictionaries({"uuid": _field(st.uuids().map(str), hostility)})
        )
    document["args"] = draw(_args(op, hostility))
    if hostility == 40:
        envelope = st.sampled_from(("v", "id", "deadline", "extra", "target"))
        for key in draw(st.sets(envelope, max_size=2)):
            document[key] = draw(hostile)
    if draw(st.booleans()):
        del document["v"]
    return document


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def _raw_dumps(document: Any) -> bytes:
    """Not escaped to ASCII: a lone surrogate becomes bytes that are not UTF-8."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(depth: int) -> bytes:
    return b'{"op": "host.ping", "id": "deep", "args": ' + b"[" * depth + b"]" * depth + b"}"


command_bodies = commands().map(_dumps)
"""Commands, clean, a little hostile or chaotic, as JSON."""
bodies = st.one_of(
    command_bodies,
    command_bodies,
    commands().map(_raw_dumps),
    json_values.map(_dumps),
    st.binary(max_size=512),
    st.integers(1, 100_000).map(nested),
    st.integers(4300, 20_000).map(
        lambda digits: b'{"op": "host.ping", "v": ' + b"7" * digits + b"}"
    ),
)
"""Bodies as an attacker would publish them."""
