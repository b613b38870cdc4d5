"""Writeback's Kafka surface: drafts into the review queue; approved decisions into the EHR.

Both consumers are at-least-once with idempotent effects: queueing is set-if-absent, writing is a
conditional create, and the queue's status transitions are atomic. Errors are raised: the broker's
middleware (``ehrflow_runtime.consumers``) redelivers, retries or dead-letters.

A decision is what is on ``review.decided``, and only its consumer moves a draft out of ``pending``:
the review API publishes a clinician's decision and changes nothing itself, and an auto-approval is
published for every delivery of a draft still pending. So the queue can never say one thing while Kafka
holds another (a publish that timed out but reached Kafka is carried out; a crash between a status
change and its publish cannot happen). Decisions of one patient share a partition, so the first
decision on a draft wins and later ones find it decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher import DefaultPublisher

from ehrflow_contracts import CardFeedback, DeadLettered, DraftProposed, ReviewDecided, WritebackCompleted, topics
from ehrflow_contracts.events import OVERRIDE_REASONS
from ehrflow_runtime.errors import PermanentError
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_writeback.queue import ReviewQueue
from ehrflow_writeback.writer import write_approved

log = logging.getLogger("ehrflow.writeback")

QUEUE_GROUP = "ehrflow-writeback-queue"
FEEDBACK_GROUP = "ehrflow-writeback-feedback"
WRITER_GROUP = "ehrflow-writeback-writer"
AUTO_REVIEWER = "Device/ehrflow-auto-approval"


@dataclass
class Deps:
    queue: ReviewQueue
    fhir_for: Callable[[str, str], FhirClient]
    """The FHIR client of an organization for a feature (the draft's workflow feature)."""


@dataclass(frozen=True)
class Publishers:
    decisions: DefaultPublisher
    feedback: DefaultPublisher
    completions: DefaultPublisher
    dead: DefaultPublisher


def declare(broker: KafkaBroker, deps: Callable[[], Deps]) -> Publishers:
    pubs = Publishers(
        decisions=broker.publisher(topics.REVIEW_DECIDED, schema=ReviewDecided, description="Review decisions."),
        feedback=broker.publisher(
            topics.CARD_FEEDBACK, schema=CardFeedback, description="CDS Hooks feedback on drafts' cards."
        ),
        completions=broker.publisher(
            topics.WRITEBACK_COMPLETED,
            schema=WritebackCompleted,
            description="Results of writing approved drafts to the EHR.",
        ),
        # Written by the broker's middleware (ehrflow_runtime.consumers); declared for the AsyncAPI document.
        dead=broker.publisher(topics.DEAD_LETTER, schema=DeadLettered, description="Decisions writeback gave up on."),
    )

    @broker.subscriber(
        topics.DRAFT_PROPOSED,
        group_id=QUEUE_GROUP,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Drafts to queue for review.",
    )
    async def on_draft(draft: DraftProposed) -> None:
        d = deps()
        new = await d.queue.add(draft)
        log.info(
            "draft queued" if new else "draft already queued",
            extra={"org": draft.organization_id, "draft_id": draft.draft_id},
        )
        queued = await d.queue.get(draft.organization_id, draft.draft_id) if draft.auto_approve else None
        # Every delivery of a still-pending auto-approved draft publishes its approval: a crash between
        # queueing and publishing must not leave it pending for ever (a repeat is ignored when consumed).
        if queued is not None and queued.status == "pending":
            await pubs.decisions.publish(
                ReviewDecided(
                    organization_id=draft.organization_id,
                    correlation_id=draft.correlation_id,
                    draft_id=draft.draft_id,
                    decision="approved",
                    reviewer=AUTO_REVIEWER,
                    decided_at=datetime.now(UTC),
                    reason="auto-approved by the organization's contract",
                ),
                key=f"{draft.organization_id}|{draft.patient}".encode(),
            )

    @broker.subscriber(
        topics.CARD_FEEDBACK,
        group_id=FEEDBACK_GROUP,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Feedback on drafts' CDS Hooks cards, recorded on the draft.",
    )
    async def on_feedback(feedback: CardFeedback) -> None:
        reason = OVERRIDE_REASONS.get(feedback.reason_code or "", feedback.reason_code)  # type: ignore[call-overload]
        await deps().queue.annotate(
            feedback.organization_id,
            feedback.draft_id,
            card_feedback=feedback.outcome,
            card_feedback_at=feedback.outcome_at.isoformat(),
            **({"card_feedback_reason": reason} if reason else {}),
            **({"card_feedback_comment": feedback.comment} if feedback.comment else {}),
        )

    @broker.subscriber(
        topics.REVIEW_DECIDED,
        group_id=WRITER_GROUP,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Decisions to carry out.",
    )
    async def on_decision(decision: ReviewDecided) -> None:
        d = deps()
        org = decision.organization_id
        queued = await d.queue.get(org, decision.draft_id)
        if queued is None:
            log.error("decision for unknown draft", extra={"org": org, "draft_id": decision.draft_id})
            return
        recorded = {
            "reviewer": decision.reviewer,
            **({"reason": decision.reason} if decision.reason else {}),
            **({"reason_code": decision.reason_code} if decision.reason_code else {}),
            **({"edited": "yes"} if decision.edited_text is not None else {}),
        }
        if decision.decision == "rejected":
            await d.queue.transition(org, decision.draft_id, "pending", "rejected", **recorded)
            return
        if queued.status == "pending":
            done, _ = await d.queue.transition(org, decision.draft_id, "pending", "approved", **recorded)
            if not done:
                return  # decided meanwhile by a decision ahead of this one
        elif queued.status != "approved":
            return  # already written, rejected or failed: a later or repeated decision changes nothing
        key = f"{org}|{queued.draft.patient}".encode()
        try:
            fhir = d.fhir_for(org, queued.draft.feature or queued.draft.workflow)
            written = await write_approved(
                fhir, queued.draft, decision.reviewer, decision.decided_at, decision.edited_text
            )
        except PermanentError as exc:  # the EHR refused it: say so, then let the middleware dead-letter it
            await d.queue.transition(org, decision.draft_id, "approved", "failed", detail=str(exc))
            await pubs.completions.publish(
                WritebackCompleted(
                    organization_id=org,
                    correlation_id=decision.correlation_id,
                    draft_id=decision.draft_id,
                    status="failed",
                    detail=str(exc),
                ),
                key=key,
            )
            raise
        await d.queue.transition(
            org,
            decision.draft_id,
            "approved",
            "written",
            resource_ref=written.resource,
            provenance_ref=written.provenance,
        )
        await pubs.completions.publish(
            WritebackCompleted(
                organization_id=org,
                correlation_id=decision.correlation_id,
                draft_id=decision.draft_id,
                status="written",
                resource=written.resource,
                provenance=written.provenance,
            ),
            key=key,
        )
        log.info("draft written", extra={"org": org, "draft_id": decision.draft_id, "resource": written.resource})

    return pubs
