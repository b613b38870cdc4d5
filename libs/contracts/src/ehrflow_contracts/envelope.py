"""The envelope every event carries."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


_CLEARED = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
"""The version nibble (4, random) and the RFC 4122 variant bits (10), as ``uuid.UUID(version=4)`` sets them."""


def new_event_id() -> str:
    """A random UUID, exactly what ``str(uuid.uuid4())`` makes of the same 16 bytes of ``os.urandom``, at
    about a third of the cost (``uuid.UUID``'s checks and properties): every event gets one."""
    h = f"{int.from_bytes(os.urandom(16), 'big') & _CLEARED | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Envelope(BaseModel):
    """Fields common to every event.

    Events are frozen past-tense facts. Consumers ignore fields they do not know (``extra="ignore"``), so
    adding a field is compatible; removing or changing one needs a new topic version.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: str = Field(default_factory=new_event_id, description="Unique id of this event.")
    organization_id: str = Field(description="The organization (health system) the event belongs to.")
    occurred_at: datetime = Field(default_factory=utcnow, description="When the fact happened at its source.")
    received_at: datetime = Field(default_factory=utcnow, description="When ehrflow recorded the fact.")
    schema_version: int = Field(default=1, description="Version of this event's schema.")
    correlation_id: str = Field(
        description="Id shared by every event that descends from one incoming notification event."
    )
