"""A pending draft as a CDS Hooks card: what it says, how urgent, where it comes from, and the link that
opens the review screen (a SMART launch, with the draft id as ``appContext``).

A card's ``uuid`` is the draft id (32 hex digits are a UUID), so feedback on a card names its draft
without any state kept between the hook call and the feedback.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ehrflow_contracts.events import OVERRIDE_REASON_SYSTEM, OVERRIDE_REASONS
from ehrflow_writeback.queue import QueuedDraft
from ehrflow_writeback.screen.view import draft_view

SERVICE_ID = "ehrflow-drafts"
INDICATORS = {"high": "critical", "medium": "warning"}
WORKFLOW_SYSTEM = "https://ehrflow.dev/fhir/CodeSystem/workflow"


def card_uuid(draft_id: str) -> str | None:
    try:
        return str(uuid.UUID(hex=draft_id))
    except ValueError:
        return None


def draft_of(card: str) -> str | None:
    """The draft id a card's uuid names (None: not one of ours)."""
    try:
        return uuid.UUID(card).hex
    except (ValueError, AttributeError, TypeError):
        return None


def card(queued: QueuedDraft, launch_url: str | None, now: datetime) -> dict[str, Any]:
    view = draft_view(queued, now)
    result = f"{view.headline} ({view.band})" if view.headline and view.band else view.headline or view.band
    summary = f"{view.title}: {result + ' - ' if result else ''}an AI draft awaits review"
    lines = [
        f"Drafted by **{view.model}** (workflow {view.workflow}) on {view.proposed}; inputs {view.inputs_age}.",
        *(f"- {e.label}: {e.value} ({e.when})" for e in view.evidence[:8]),
        "Nothing is written to the chart until a clinician approves it.",
    ]
    found: dict[str, Any] = {
        "summary": summary[:139],
        "indicator": INDICATORS.get(view.band, "info"),
        "detail": "\n".join(lines),
        "source": {
            "label": f"ehrflow · {view.model}",
            "topic": {"system": WORKFLOW_SYSTEM, "code": view.workflow, "display": view.title},
        },
        "overrideReasons": [
            {"system": OVERRIDE_REASON_SYSTEM, "code": code, "display": display}
            for code, display in OVERRIDE_REASONS.items()
        ],
    }
    if (uid := card_uuid(view.id)) is not None:
        found["uuid"] = uid
    if launch_url:
        found["links"] = [{"label": "Review the AI draft", "url": launch_url, "type": "smart", "appContext": view.id}]
    return found
