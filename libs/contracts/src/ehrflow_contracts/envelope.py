"""The envelope every event carries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


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
