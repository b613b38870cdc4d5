"""Drafts as inference proposes them, for tests of the review side (queue, API, screen, CDS Hooks)."""

from __future__ import annotations

import uuid
from typing import Any

from ehrflow_contracts import DraftProposed, ModelRef


def news2_draft(org: str = "org1", patient: str = "Patient/p1", **fields: Any) -> DraftProposed:
    """A NEWS2 RiskAssessment draft with a fresh id; ``fields`` override or add any event field."""
    values: dict[str, Any] = {
        "organization_id": org,
        "correlation_id": "c",
        "draft_id": uuid.uuid4().hex,
        "workflow": "news2",
        "model": ModelRef(name="ehrflow-news2", version="1.0.0"),
        "patient": patient,
        "resource": {"resourceType": "RiskAssessment", "status": "preliminary", "subject": {"reference": patient}},
        "basis": ("Observation/o1/_history/1",),
    }
    return DraftProposed(**{**values, **fields})
