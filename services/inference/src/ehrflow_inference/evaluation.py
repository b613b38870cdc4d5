"""What one evaluation of a workflow reads with, and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ehrflow_contracts.events import Evidence, OutcomeReason


class FhirReader(Protocol):
    """What a workflow may do with its organization's FHIR API: read and search, nothing else."""

    async def read(self, reference: str) -> dict[str, Any]: ...

    async def search(
        self, resource_type: str, params: dict[str, str] | list[tuple[str, str]]
    ) -> list[dict[str, Any]]: ...

    async def search_all(
        self, resource_type: str, params: list[tuple[str, str]], *, max_pages: int
    ) -> tuple[list[dict[str, Any]], bool, int]: ...


@dataclass(frozen=True)
class Drafted:
    """A drafted resource, before the pipeline gives it an id, a model reference and a review policy."""

    patient: str
    resource: dict[str, Any]
    basis: tuple[str, ...]
    """Versioned references of the inputs used: the draft id is derived from them."""
    occurred_at: datetime
    summary: dict[str, Any] = field(default_factory=dict)
    """Figures a reviewer sees, and that an auto-approval condition tests."""
    evidence: tuple[Evidence, ...] = ()
    """The inputs as a reviewer reads them (``ehrflow_inference.evidence.describe_all``)."""


@dataclass(frozen=True)
class Outcome:
    """Why an event that concerned the workflow gave no draft."""

    reason: OutcomeReason
    detail: str
    patient: str | None = None
    missing: tuple[str, ...] = ()


class OutcomeError(Exception):
    """Raised anywhere inside ``draft`` to end the evaluation with an outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome
