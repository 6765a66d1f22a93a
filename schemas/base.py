"""What every wire model shares, and the constrained strings of the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.names import DOMAIN_NAME_PATTERN, HOST_NAME_MAX, HOST_NAME_PATTERN

WIRE_VERSION: Literal[1] = 1


class WireModel(BaseModel):
    """Frozen, strict, and closed: an unknown field is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


DomainName = Annotated[str, StringConstraints(pattern=DOMAIN_NAME_PATTERN)]
HostName = Annotated[str, StringConstraints(pattern=HOST_NAME_PATTERN, max_length=HOST_NAME_MAX)]
GroupName = HostName
MessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,127}$")]

# Strings on the wire: accepted as text from JSON and from decoded JSON alike.
Uuid = Annotated[UUID, Field(strict=False)]
Timestamp = Annotated[datetime, Field(strict=False)]
AwareTimestamp = Annotated[AwareDatetime, Field(strict=False)]
