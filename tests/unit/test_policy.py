"""The host policy: its file, its rules, and how the dispatcher refuses what it denies
(OPERATION_DENIED, nothing reaches the driver, a warning and a metric); the wire fields
that cannot ask for privileges; the message size limit."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cli import build_parser, config_from, main
from agent.host.dispatch import Dispatcher
from agent.host.domains import DomainTable
from agent.host.metrics import Metrics
from agent.host.policy import Denied, MountRule, Policy, PolicyError, load_policy
from agent.host.store import Store
from schemas.commands import InvalidCommand, parse_command
from schemas.domain import DomainSpec
from schemas.replies import Reply
from tests.fakes import FakeDriver, fake_host

IMAGE = "virtbus-test:latest"


def spec(**fields: Any) -> DomainSpec:
    return DomainSpec.model_validate({"name": "web", "image": IMAGE, **fields})


def denied_rule(policy: Policy, **fields: Any) -> str:
    with pytest.raises(Denied) as caught:
        policy.admit(spec(**fields))
    assert caught.value.message.startswith("operation forbidden: ")
    return caught.value.rule


# --- the policy file -------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_no_file_means_the_safe_defaults() -> None:
    policy = load_policy(None)
    assert policy == Policy()
    assert policy.mounts == []
    assert policy.networks == ["none"]
    assert policy.default_pids_limit == 1024
    assert Policy(pids_max=100).default_pids_limit == 100
    policy.admit(spec())
    assert denied_rule(policy, mounts=[{"source": "/srv", "target": "/d", "readonly": True}])
    assert denied_rule(policy, network="bridge") == "network"


def test_a_policy_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
images = ["virtbus-test:*", "registry.local:5000/*"]
networks = ["none", "backend"]
memory_kib_max = 131072
vcpus_max = 1
pids_max = 256
pids_default = 64

[[mounts]]
prefix = "/srv/data/"

[[mounts]]
prefix = "/srv/scratch"
force_readonly = false
""",
    )
    policy = load_policy(path)
    assert policy.mounts == [
        MountRule(prefix="/srv/data", force_readonly=True),
        MountRule(prefix="/srv/scratch", force_readonly=False),
    ]
    assert (policy.memory_kib_max, policy.vcpus_max, policy.pids_max) == (131072, 1, 256)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("imgaes = ['*']", "imgaes: Extra inputs are not permitted"),
        ("networks = ['none', 'host']", "network 'host' cannot be allowed"),
        ("[[mounts]]\nprefix = '/'", "prefix '/' would allow mounting the whole host"),
        ("[[mounts]]\nprefix = 'srv'", "mounts.0.prefix"),
        ("[[mounts]]\nprefix = '/srv/../etc'", "'..'"),
        ("pids_max = 10\npids_default = 20", "pids_default 20 is above pids_max 10"),
        ("memory_kib_max = 1", "memory_kib_max"),
        ("vcpus_max = 0", "vcpus_max"),
        ("images = [", "cannot read policy file"),
        ("images = ['']", "images.0"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_reason(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert says in str(caught.value)


def test_the_agent_will_not_start_on_a_bad_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "networks = ['host']")
    argv = ["agent", "--host", "h1", "--amqp-url", "amqp://u:s3cret@broker/"]
    assert main([*argv, "--policy-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid policy file" in err and "network 'host'" in err
    assert "s3cret" not in err
    assert main([*argv, "--policy-file", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read policy file" in capsys.readouterr().err


def test_policy_file_and_size_limit_come_from_flag_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write(tmp_path, "vcpus_max = 2")
    monkeypatch.setenv("VIRTBUS_POLICY_FILE", str(from_env))
    monkeypatch.setenv("VIRTBUS_MAX_MESSAGE_BYTES", "4096")
    config = config_from(build_parser().parse_args(["agent", "--host", "h1"]))
    assert config.policy.vcpus_max == 2
    assert config.max_message_bytes == 4096
    from_flag = tmp_path / "flag.toml"
    from_flag.write_text("vcpus_max = 3")
    argv = ["agent", "--host", "h1", "--policy-file", str(from_flag)]
    argv += ["--max-message-bytes", "2048"]
    config = config_from(build_parser().parse_args(argv))
    assert (config.policy.vcpus_max, config.max_message_bytes) == (3, 2048)
    monkeypatch.delenv("VIRTBUS_POLICY_FILE")
    monkeypatch.delenv("VIRTBUS_MAX_MESSAGE_BYTES")
    config = config_from(build_parser().parse_args(["agent", "--host", "h1"]))
    assert config.policy == Policy()
    assert config.max_message_bytes == 1024 * 1024


# --- the rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "image", "allowed"),
    [
        (["virtbus-test:*"], "virtbus-test:latest", True),
        (["virtbus-test:*"], "virtbus-test", True),
        (["virtbus-test:latest"], "docker.io/library/virtbus-test:latest", True),
        (["docker.io/library/*"], "busybox:1.36", True),
        (["busybox:*"], "index.docker.io/library/busybox:1", True),
        (["registry.local:5000/team/*"], "registry.local:5000/team/app:v2", True),
        (["registry.local:5000/team/*"], "registry.local:5000/other/app:v2", False),
        (["registry.local/*"], "registry.local.evil.example/app:v2", False),
        (["virtbus-test:*"], "busybox:latest", False),
        (["virtbus-test:latest"], "virtbus-test:nocmd", False),
        (["virtbus-test:*"], "evil/virtbus-test:latest", False),
        ([], "virtbus-test:latest", False),
    ],
)
def test_images_must_match_a_pattern(patterns: list[str], image: str, allowed: bool) -> None:
    policy = Policy(images=patterns)
    if allowed:
        policy.admit(spec(image=image))
    else:
        assert denied_rule(policy, image=image) == "image"


@pytest.mark.parametrize("image", ["df2f65ba194b", "abc", "sha256:" + "0" * 64, "sha256:abc"])
def test_what_docker_could_take_for_an_image_id_needs_a_policy_that_allows_any_image(
    image: str,
) -> None:
    with pytest.raises(Denied, match="could name any image by its ID"):
        Policy(images=["*:latest", "*:*", "sha256:*"]).admit(spec(image=image))
    Policy().admit(spec(image=image))


def mount(source: str, readonly: bool = True) -> list[dict[str, Any]]:
    return [{"source": source, "target": "/data", "readonly": readonly}]


def test_mounts_need_an_allowed_prefix_component_by_component(tmp_path: Path) -> None:
    policy = Policy(mounts=[MountRule(prefix="/srv/data")])
    policy.admit(spec(mounts=mount("/srv/data")))
    policy.admit(spec(mounts=mount("/srv/data/sub/dir")))
    policy.admit(spec(mounts=mount("/srv//data/./sub/")))
    for source in ("/", "/srv", "/srv/database", "/etc", "/var/run/docker.sock"):
        assert denied_rule(policy, mounts=mount(source)) == "mount"


@pytest.mark.parametrize(
    ("source", "reaches"),
    [
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/var/run", "/var/run/docker.sock"),
        ("/var", "/var/run/docker.sock"),
        ("/var/lib/docker/volumes/x", "/var/lib/docker"),
        ("/proc/1/root", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
    ],
)
def test_some_host_paths_are_never_mounted(source: str, reaches: str) -> None:
    policy = Policy(mounts=[MountRule(prefix="/var"), MountRule(prefix="/proc")])
    policy.mounts.extend([MountRule(prefix="/sys"), MountRule(prefix="/dev")])
    with pytest.raises(Denied, match=f"reaches '{reaches}'"):
        policy.admit(spec(mounts=mount(source)))
    policy.admit(spec(mounts=mount("/var/virtbus/data")))


def test_read_only_is_forced_unless_the_rule_says_otherwise() -> None:
    policy = Policy(
        mounts=[MountRule(prefix="/srv/ro"), MountRule(prefix="/srv/rw", force_readonly=False)]
    )
    with pytest.raises(Denied, match="may only be mounted read-only"):
        policy.admit(spec(mounts=mount("/srv/ro/x", readonly=False)))
    policy.admit(spec(mounts=mount("/srv/ro/x", readonly=True)))
    policy.admit(spec(mounts=mount("/srv/rw/x", readonly=False)))


def test_a_symlink_cannot_lead_out_of_an_allowed_prefix(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape").symlink_to("/etc")
    (allowed / "inside").symlink_to(allowed)
    policy = Policy(mounts=[MountRule(prefix=str(allowed))])
    with pytest.raises(Denied, match="mounting host path '/etc' is not allowed"):
        policy.admit(spec(mounts=mount(str(allowed / "escape"))))
    policy.admit(spec(mounts=mount(str(allowed / "inside"))))


def test_limits_have_ceilings() -> None:
    policy = Policy(memory_kib_max=65536, vcpus_max=1, pids_max=100, pids_default=50)
    policy.admit(spec(memory_kib=65536, vcpus=1, pids_limit=100))
    assert denied_rule(policy, memory_kib=65537, vcpus=1) == "memory"
    assert denied_rule(policy, memory_kib=65536, vcpus=2) == "vcpus"
    assert denied_rule(policy, memory_kib=65536, vcpus=1, pids_limit=101) == "pids"
    with pytest.raises(Denied, match="memory_kib must be given: the ceiling is 65536 KiB"):
        policy.admit(spec(vcpus=1))
    with pytest.raises(Denied, match="vcpus must be given"):
        policy.admit(spec(memory_kib=8192))
    policy.check_limits(memory_kib=None, vcpus=1)
    with pytest.raises(Denied, match="memory_kib 131072 KiB is above the ceiling 65536 KiB"):
        policy.check_limits(memory_kib=131072, vcpus=None)


# --- what no wire field can ask for ----------------------------------------------------

PRIVILEGED_FIELDS: dict[str, Any] = {
    "privileged": True,
    "cap_add": ["SYS_ADMIN"],
    "CapAdd": ["ALL"],
    "devices": ["/dev/sda"],
    "device_cgroup_rules": ["a *:* rwm"],
    "pid_mode": "host",
    "ipc_mode": "host",
    "ipc": "host",
    "uts_mode": "host",
    "userns_mode": "host",
    "userns": "host",
    "cgroupns": "host",
    "security_opt": ["apparmor=unconfined"],
    "sysctls": {"kernel.core_pattern": "|/tmp/x"},
    "volumes_from": ["other"],
    "binds": ["/:/host"],
    "host_config": {"Privileged": True},
    "HostConfig": {"Privileged": True},
    "runtime": "runc",
    "cgroup_parent": "/",
}


def define(**fields: Any) -> bytes:
    return json.dumps(
        {"id": "c1", "op": "domain.define", "args": {"spec": {**spec_fields(), **fields}}}
    ).encode()


def spec_fields() -> dict[str, Any]:
    return {"name": "web", "image": IMAGE, "command": ["sleep", "1"]}


@pytest.mark.parametrize(("field", "value"), PRIVILEGED_FIELDS.items(), ids=PRIVILEGED_FIELDS)
def test_no_field_asks_for_privileges(field: str, value: Any) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(define(**{field: value}))
    assert f"args.spec.{field}: Extra inputs are not permitted" in caught.value.reason


@pytest.mark.parametrize(
    "volumes",
    [
        {"/": {}},
        [{"volume": "data", "target": "/d", "driver": "local"}],
        [{"volume": "/var/lib/docker", "target": "/d"}],
        [{"volume": "data", "target": "/d/../.."}],
    ],
)
def test_volumes_name_only_a_pool_volume_and_a_target(volumes: Any) -> None:
    """The spec's ``volumes`` is not Docker's: no anonymous volume, no driver or option,
    no host path, no escaping target."""
    with pytest.raises(InvalidCommand, match=r"args\.spec\.volumes"):
        parse_command(define(volumes=volumes))


@pytest.mark.parametrize(
    ("where", "value"),
    [("args", {"privileged": True}), ("mount", {"propagation": "shared"})],
)
def test_nor_a_field_elsewhere(where: str, value: dict[str, Any]) -> None:
    document: dict[str, Any] = {"id": "c1", "op": "domain.define", "args": {"spec": spec_fields()}}
    if where == "args":
        document["args"].update(value)
    else:
        document["args"]["spec"]["mounts"] = [{"source": "/srv", "target": "/d", **value}]
    with pytest.raises(InvalidCommand, match="Extra inputs are not permitted"):
        parse_command(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"network": "host"}, "network 'host' would share the host's namespace"),
        ({"network": "container:other"}, "args.spec.network"),
        ({"image": "Busybox"}, "must be lowercase"),
        ({"image": "busybox:"}, "not a valid image reference"),
        ({"image": "a" * 64}, "cannot specify 64-byte hexadecimal strings"),
        ({"image": "busy box"}, "args.spec.image"),
        ({"image": "../../etc"}, "args.spec.image"),
        ({"image": "registry:5000/app:bad tag"}, "args.spec.image"),
        ({"mounts": mount("relative/path")}, "source"),
        ({"mounts": mount("/srv/../../etc")}, "'..'"),
        ({"mounts": mount("/srv/data\n")}, "source"),
        ({"mounts": mount("/srv/da\x00ta")}, "source"),
        ({"workdir": "/app/../.."}, "'..'"),
        ({"env": {"A=B": "x"}}, "args.spec.env"),
        ({"env": {"1A": "x"}}, "args.spec.env"),
        ({"env": {"": "x"}}, "args.spec.env"),
        ({"env": {"A": "x\x00y"}}, "args.spec.env.A"),
        ({"command": ["sh", "-c", "a\x00b"]}, "args.spec.command.2"),
        ({"pids_limit": 0}, "args.spec.pids_limit"),
        ({"pids_limit": -1}, "args.spec.pids_limit"),
        ({"uuid": "../../etc/passwd"}, "args.spec.uuid"),
        ({"name": "../web"}, "args.spec.name"),
        ({"mounts": mount("/srv") * 65}, "args.spec.mounts"),
    ],
)
def test_hostile_values_are_refused_at_the_edge(fields: dict[str, Any], mentions: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(define(**fields))
    assert mentions in caught.value.reason


def test_paths_are_normalised() -> None:
    parsed = DomainSpec.model_validate(
        {
            **spec_fields(),
            "workdir": "//app/./src/",
            "mounts": [{"source": "/srv//data/", "target": "/data/."}],
        }
    )
    assert parsed.workdir == "/app/src"
    assert (parsed.mounts[0].source, parsed.mounts[0].target) == ("/srv/data", "/data")


@pytest.mark.parametrize(
    "body",
    [
        b"1" * 5000,
        b'{"id": "c1", "op": "host.ping", "v": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,
        b'{"id": "c1", "op": "host.ping", "args": ' + b'{"a":' * 50_000 + b"}",
    ],
    ids=["huge integer", "huge integer in a field", "deep array", "deep object"],
)
def test_bodies_that_used_to_crash_the_decoder_are_invalid(body: bytes) -> None:
    with pytest.raises(InvalidCommand, match="not UTF-8 JSON"):
        parse_command(body)


# --- through the dispatcher ------------------------------------------------------------


class Rig:
    def __init__(self, driver: FakeDriver, dispatcher: Dispatcher, metrics: Metrics) -> None:
        self.driver = driver
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.count = 0

    async def call(
        self, op: str, target: str | None = None, args: dict[str, Any] | None = None
    ) -> Reply:
        self.count += 1
        document: dict[str, Any] = {"id": f"c{id(self)}-{self.count}", "op": op}
        if target is not None:
            document["target"] = {"name": target}
        if args is not None:
            document["args"] = args
        outcome = await self.dispatcher.submit(json.dumps(document).encode(), None)
        return outcome.reply

    def denied(self, op: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "virtbus_commands_denied_total", {"op": op, "reason": reason}
        )
        return value or 0.0


RigFactory = Callable[[Policy], Rig]


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[RigFactory]:
    """Dispatchers over one fake engine and one store, each with its own policy (as one
    agent restarted with another policy file)."""
    with Store(tmp_path / "h1") as store:
        async with fake_host(store, tmp_path) as host:

            def rig(policy: Policy) -> Rig:
                metrics = Metrics()
                operations = host.operations(policy=policy)
                dispatcher = Dispatcher("h1", operations, host.domains, store, 2, metrics)
                return Rig(host.driver, dispatcher, metrics)

            yield rig


SPEC = {"name": "web", "image": IMAGE, "command": ["sleep", "60"]}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"image": "busybox:latest"}, "image"),
        ({"mounts": mount("/")}, "mount"),
        ({"network": "bridge"}, "network"),
        ({"memory_kib": 1 << 20}, "memory"),
    ],
)
@pytest.mark.parametrize("op", ["domain.define", "domain.create_xml"])
async def test_a_denied_define_touches_nothing(
    rigs: RigFactory,
    caplog: pytest.LogCaptureFixture,
    op: str,
    fields: dict[str, Any],
    reason: str,
) -> None:
    rig = rigs(Policy(images=["virtbus-test:*"], memory_kib_max=65536))
    with caplog.at_level(logging.WARNING, logger="agent.host.dispatch"):
        reply = await rig.call(op, args={"spec": {**SPEC, "memory_kib": 32768, **fields}})
    assert reply.error is not None
    assert (reply.error.code, reply.error.vir_error) == ("OPERATION_DENIED", 29)
    assert reply.error.message.endswith("(host policy)")
    assert rig.driver.calls == []
    assert rig.driver.containers == {}
    assert rig.denied(op, reason) == 1
    assert rig.metrics.registry.get_sample_value(
        "virtbus_commands_total", {"op": op, "outcome": "OPERATION_DENIED"}
    )
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert op in record.getMessage() and "'web'" in record.getMessage()
    assert reply.error.message.split(": ", 1)[1] in record.getMessage()
    assert (await rig.call("domain.lookup", "web")).error is not None


async def test_tunables_respect_the_ceilings(rigs: RigFactory) -> None:
    rig = rigs(Policy(memory_kib_max=65536, vcpus_max=1))
    limited = {**SPEC, "memory_kib": 32768, "vcpus": 1}
    assert (await rig.call("domain.define", args={"spec": limited})).ok
    rig.driver.calls.clear()
    reply = await rig.call("domain.set_memory", "web", {"memory_kib": 65537})
    assert reply.error is not None and reply.error.code == "OPERATION_DENIED"
    reply = await rig.call("domain.set_vcpus", "web", {"vcpus": 2})
    assert reply.error is not None and reply.error.code == "OPERATION_DENIED"
    reply = await rig.call("domain.set_tuning", "web", {"memory_kib": 65537, "cpu_shares": 64})
    assert reply.error is not None and reply.error.code == "OPERATION_DENIED"
    assert rig.driver.calls == []
    assert (
        rig.denied("domain.set_memory", "memory"),
        rig.denied("domain.set_vcpus", "vcpus"),
        rig.denied("domain.set_tuning", "memory"),
    ) == (1, 1, 1)
    assert (await rig.call("domain.set_memory", "web", {"memory_kib": 65536})).ok


async def test_a_definition_older_than_the_policy_is_checked_again_at_start(
    rigs: RigFactory,
) -> None:
    before = rigs(Policy())
    assert (await before.call("domain.define", args={"spec": SPEC})).ok
    after = rigs(Policy(images=["other:*"]))
    before.driver.calls.clear()
    reply = await after.call("domain.create", "web")
    assert reply.error is not None and reply.error.code == "OPERATION_DENIED"
    assert "image 'virtbus-test:latest' is not allowed" in reply.error.message
    assert before.driver.calls == []
    assert after.denied("domain.create", "image") == 1


async def test_a_message_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    with Store(tmp_path / "h1") as store:
        metrics = Metrics()
        operations: Any = None
        dispatcher = Dispatcher(
            "h1", operations, DomainTable(), store, 1, metrics, max_body_bytes=1024
        )
        body = json.dumps({"id": "big", "op": "host.ping", "pad": "x" * 2000}).encode()
        outcome = await dispatcher.submit(body, "big")
    assert not outcome.accepted
    assert outcome.reply.id == "big"
    assert outcome.reply.error is not None
    assert outcome.reply.error.code == "INVALID_ARG"
    assert f"message of {len(body)} bytes is larger than the limit of 1024 bytes" in (
        outcome.reply.error.message
    )
    assert metrics.registry.get_sample_value(
        "virtbus_commands_total", {"op": "invalid", "outcome": "INVALID_ARG"}
    )
