"""Recording a clinician's decision: the one path both the review API and the review screen take.

The decision is what reaches ``review.decided``: it is published, and the queue moves only when writeback's
consumer carries it out (``ehrflow_writeback.handlers``). Checks that need the draft (its status, its
expiry, whether its output has text to edit) happen here, before anything is published.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ehrflow_contracts import ReviewDecided
from ehrflow_contracts.events import OverrideReason
from ehrflow_writeback.handlers import Publishers
from ehrflow_writeback.queue import QueuedDraft
from ehrflow_writeback.writer import editable_text

Verdict = Literal["approved", "rejected"]


@dataclass(frozen=True)
class Refused:
    """Why a decision was not recorded: an HTTP status, an OperationOutcome code and words for a person."""

    status: int
    code: str
    message: str


def role_refusal(queued: QueuedDraft, roles: tuple[str, ...] | None) -> Refused | None:
    """Whether a reviewer with ``roles`` (None: a review-key client) lacks the role the draft's contract names."""
    needed = queued.draft.approver_role
    if needed is None or roles is None or needed in roles:
        return None
    return Refused(403, "forbidden", f"deciding on a {queued.draft.workflow} draft needs the role '{needed}'")


def refusal(
    queued: QueuedDraft, *, edited_text: str | None, now: datetime, roles: tuple[str, ...] | None = None
) -> Refused | None:
    """Whether this draft can take a decision now, from this reviewer."""
    if (refused := role_refusal(queued, roles)) is not None:
        return refused
    if queued.status == "stale":
        return Refused(409, "conflict", "draft is stale: a draft from newer data supersedes it")
    if queued.status != "pending":
        return Refused(409, "conflict", f"draft is already {queued.status}")
    expires = queued.draft.expires_at
    if expires is not None and expires <= now:
        return Refused(409, "conflict", "draft has expired: its inputs are too old to decide on")
    if edited_text is not None and editable_text(queued.draft.resource) is None:
        return Refused(400, "invalid", f"a {queued.draft.resource.get('resourceType')} has no text to edit")
    return None


async def publish_decision(
    publishers: Publishers,
    queued: QueuedDraft,
    *,
    verdict: Verdict,
    reviewer: str,
    roles: tuple[str, ...] | None = None,
    reason: str | None = None,
    reason_code: OverrideReason | None = None,
    edited_text: str | None = None,
    timeout_s: float,
) -> ReviewDecided | Refused:
    """Publish the decision, or say why not. A publish not confirmed in time may still reach Kafka and be
    carried out: the answer says so (503) and nothing here reverts it."""
    now = datetime.now(UTC)
    refused = refusal(queued, edited_text=edited_text, now=now, roles=roles)
    if refused is not None:
        if refused.status == 403:
            await publishers.auditor.record(
                "review.refused",
                organization=queued.draft.organization_id,
                actor=reviewer,
                outcome="failure",
                patient=queued.draft.patient,
                drafts=(queued.draft.draft_id,),
                details={"workflow": queued.draft.workflow, "reason": "role", "role": queued.draft.approver_role},
                correlation_id=queued.draft.correlation_id,
            )
        return refused
    draft = queued.draft
    decision = ReviewDecided(
        organization_id=draft.organization_id,
        correlation_id=draft.correlation_id,
        draft_id=draft.draft_id,
        decision=verdict,
        reviewer=reviewer,
        decided_at=now,
        reason=reason,
        reason_code=reason_code,
        edited_text=edited_text,
    )
    try:
        await asyncio.wait_for(
            publishers.decisions.publish(decision, key=f"{draft.organization_id}|{draft.patient}".encode()),
            timeout_s,
        )
    except Exception:
        return Refused(
            503,
            "transient",
            "the decision was not confirmed in time and may still be recorded; look at the draft before deciding again",
        )
    await publishers.auditor.record(
        "review.decided",
        organization=draft.organization_id,
        actor=reviewer,
        outcome="success",
        patient=draft.patient,
        drafts=(draft.draft_id,),
        details={
            "decision": verdict,
            "workflow": draft.workflow,
            "reason_code": reason_code,
            "edited": "yes" if edited_text is not None else "no",
        },
        correlation_id=draft.correlation_id,
    )
    return decision
