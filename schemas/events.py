"""Events on ``virtbus.events``: libvirt's lifecycle, reboot and tunable callbacks, and
the agents' presence."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import WIRE_VERSION, DomainName, HostName, Timestamp, Uuid, WireModel
from schemas.codes import EventId, Lifecycle

Origin = Literal["agent", "external", "reconcile"]


class DomainRef(WireModel):
    name: DomainName
    uuid: Uuid
    id: int


class EventBase(WireModel):
    v: Literal[1] = WIRE_VERSION
    host: HostName
    time: Timestamp


class DomainEventBase(EventBase):
    seq: int = Field(ge=1)
    domain: DomainRef
    origin: Origin
    cause: str | None = None


class LifecycleEvent(DomainEventBase):
    kind: Literal["lifecycle"] = "lifecycle"
    event: str
    event_code: int
    detail: str
    detail_code: int
    exit_code: int | None = None

    @property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle.of(self.event, self.detail)

    @property
    def routing_key(self) -> str:
        return f"{self.host}.lifecycle.{self.event}.{self.detail}"


class RebootEvent(DomainEventBase):
    kind: Literal["reboot"] = "reboot"

    @property
    def routing_key(self) -> str:
        return f"{self.host}.reboot"


class TunableEvent(DomainEventBase):
    """Tunables that changed, by their spec names (``DomainSpec.tunables``)."""

    kind: Literal["tunable"] = "tunable"
    params: dict[str, int]

    @property
    def routing_key(self) -> str:
        return f"{self.host}.tunable"


class DeviceEvent(DomainEventBase):
    """libvirt's DEVICE_ADDED (event ID 19) or DEVICE_REMOVED (15): a device plugged into
    or out of the running domain, by its alias (``net1``)."""

    kind: Literal["device"] = "device"
    event: Literal["added", "removed"]
    event_id: int
    alias: str

    @classmethod
    def of(cls, event: Literal["added", "removed"], **fields: object) -> DeviceEvent:
        code = EventId.DEVICE_ADDED if event == "added" else EventId.DEVICE_REMOVED
        return cls.model_validate({"event": event, "event_id": int(code), **fields})

    @property
    def routing_key(self) -> str:
        return f"{self.host}.device.{self.event}"


class NetworkRef(WireModel):
    name: DomainName
    uuid: Uuid


class NetworkEvent(EventBase):
    """libvirt's network lifecycle event (``virNetworkEventLifecycleType``); ``detail``
    is always ``none`` (0), as libvirt's."""

    seq: int = Field(ge=1)
    kind: Literal["network"] = "network"
    network: NetworkRef
    event: str
    event_code: int
    detail: str = "none"
    detail_code: int = 0
    cause: str | None = None

    @property
    def routing_key(self) -> str:
        return f"{self.host}.network.{self.event}.{self.detail}"


class MetadataChangeEvent(DomainEventBase):
    """libvirt's VIR_DOMAIN_EVENT_ID_METADATA_CHANGE (23): the description, title or a
    namespace's element (``nsuri``) changed; one event per change."""

    kind: Literal["metadata_change"] = "metadata_change"
    type: Literal["description", "title", "element"]
    type_code: int
    nsuri: str | None = None

    @property
    def routing_key(self) -> str:
        return f"{self.host}.metadata_change"


class HealthEvent(DomainEventBase):
    """The domain's health check (its spec's ``healthcheck``, or its image's) changed
    its verdict. libvirt has no such event: the gateway reports it as the guest agent's
    lifecycle (VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, 18), healthy as connected."""

    kind: Literal["health"] = "health"
    status: Literal["healthy", "unhealthy"]

    @property
    def routing_key(self) -> str:
        return f"{self.host}.health.{self.status}"


PullStatus = Literal["pulling", "complete", "failed"]


class ImagePullEvent(EventBase):
    """Progress of an image pull that a command (``cause``, its id) started: at most one
    event every ``PULL_EVENT_INTERVAL_S`` while the pull runs, then one ``complete`` or
    ``failed``. Sizes are the registry's compressed layer sizes; ``bytes_total`` counts
    only the layers whose size the engine has reported so far, so it may grow. No
    ``seq``, not stored: a lost progress event is superseded by the next. libvirt has no
    such event."""

    kind: Literal["image"] = "image"
    image: str
    cause: str | None = None
    status: PullStatus
    layers: int = Field(ge=0)
    layers_done: int = Field(ge=0)
    bytes_done: int = Field(ge=0)
    bytes_total: int = Field(ge=0)

    @property
    def routing_key(self) -> str:
        return f"{self.host}.image.pull"


PULL_EVENT_INTERVAL_S = 0.5
"""The least time between two progress events of one pull."""

Presence = Literal["online", "heartbeat", "offline"]


class AgentEvent(EventBase):
    """An agent's presence; carries no ``seq``."""

    kind: Literal["agent"] = "agent"
    state: Presence
    agent_version: str
    groups: list[str]
    capabilities: list[str]
    heartbeat_s: float
    domains: int

    @property
    def routing_key(self) -> str:
        return f"{self.host}.agent.{self.state}"


DomainEvent = Annotated[
    LifecycleEvent | RebootEvent | TunableEvent | DeviceEvent | MetadataChangeEvent | HealthEvent,
    Field(discriminator="kind"),
]
Event = Annotated[
    LifecycleEvent
    | RebootEvent
    | TunableEvent
    | DeviceEvent
    | NetworkEvent
    | MetadataChangeEvent
    | HealthEvent
    | AgentEvent
    | ImagePullEvent,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
