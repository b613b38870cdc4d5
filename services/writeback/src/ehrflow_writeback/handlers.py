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

Writes survive a down EHR. A write that finds the EHR unavailable (429, 5xx, a timeout; ``Retry-After``
honoured) leaves the decision partition for the delayed retry tiers (``topics.WRITEBACK_RETRIES``, delays
``EHRFLOW_RETRY__DELAYS_S``), so other decisions, other organizations' included, go on; while an
organization's EHR is known to be down its decisions go to the tiers without a call (``ehr_health``).
After the last tier the decision is dead-lettered with its record (``ehrflow-writeback dead-letters
replay``) and the draft stays approved, saying so. A refusal (409, 412, 422, a refused type) is final: the
draft is marked failed with the EHR's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.publisher import DefaultPublisher

from ehrflow_contracts import (
    AuditRecorded,
    CardFeedback,
    DeadLettered,
    DraftProposed,
    ReviewDecided,
    WritebackCompleted,
    topics,
)
from ehrflow_contracts.audit import SYSTEM_AUDIT_RECORD
from ehrflow_contracts.fhir import validate
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.consumers import where
from ehrflow_runtime.dead_letters import after_retries
from ehrflow_runtime.errors import PermanentError, RetryableError, UpstreamUnavailable
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.retry_tiers import HEADER_ATTEMPT, HEADER_DUE, RetryPolicy, due_at, headers
from ehrflow_writeback.ehr_health import EhrHealth
from ehrflow_writeback.queue import ReviewQueue
from ehrflow_writeback.records import decision_fields, feedback_fields
from ehrflow_writeback.writer import write_approved

log = logging.getLogger("ehrflow.writeback")

QUEUE_GROUP = "ehrflow-writeback-queue"
FEEDBACK_GROUP = "ehrflow-writeback-feedback"
WRITER_GROUP = "ehrflow-writeback-writer"
RETRY_GROUP = "ehrflow-writeback-retry"
"""Each tier consumes in a group of its own (``-1``, ``-2``, ``-3``)."""
AUDIT_GROUP = "ehrflow-writeback-audit-copies"
AUTO_REVIEWER = "Device/ehrflow-auto-approval"


@dataclass
class Deps:
    queue: ReviewQueue
    fhir_for: Callable[[str, str, str], FhirClient]
    """The FHIR client that writes a resource type for an organization and feature (the draft's workflow's);
    raises ``PermanentError`` for a type the organization refuses."""
    health: EhrHealth | None = None
    """Organizations whose EHR answered "unavailable" moments ago; None: always try."""
    audit_feature: Callable[[str], str | None] = lambda _org: None
    """The feature whose token writes an organization's audit records to its EHR; None: it wants no copies."""


@dataclass(frozen=True)
class Publishers:
    decisions: DefaultPublisher
    feedback: DefaultPublisher
    completions: DefaultPublisher
    dead: DefaultPublisher
    auditor: Auditor
    """Audit records (views, decisions, refusals, writes) on the audit topic, each with its FHIR AuditEvent."""


def declare(
    broker: KafkaBroker,
    deps: Callable[[], Deps],
    policy: RetryPolicy | None = None,
    *,
    workers: int = 1,
    audit_timeout_s: float = 5.0,
) -> Publishers:
    """``workers`` consumers take decision partitions each, so that many writes run at once."""
    policy = policy or RetryPolicy()
    audit = broker.publisher(
        topics.AUDIT,
        schema=AuditRecorded,
        description="Views of drafts, decisions, refusals and writes, each with its FHIR AuditEvent.",
    )
    pubs = Publishers(
        decisions=broker.publisher(topics.REVIEW_DECIDED, schema=ReviewDecided, description="Review decisions."),
        auditor=Auditor(audit, source="writeback", confirm_timeout_s=audit_timeout_s),
        feedback=broker.publisher(
            topics.CARD_FEEDBACK, schema=CardFeedback, description="CDS Hooks feedback on drafts' cards."
        ),
        completions=broker.publisher(
            topics.WRITEBACK_COMPLETED,
            schema=WritebackCompleted,
            description="Results of writing approved drafts to the EHR.",
        ),
        # Written here after the last retry tier, and by the broker's middleware (ehrflow_runtime.consumers).
        dead=broker.publisher(topics.DEAD_LETTER, schema=DeadLettered, description="Decisions writeback gave up on."),
    )
    tiers = tuple(
        broker.publisher(topic, schema=ReviewDecided, description=f"Approved decisions to write again (tier {tier}).")
        for tier, topic in enumerate(topics.WRITEBACK_RETRIES, 1)
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
        for stale in await d.queue.supersede(draft):
            log.info("draft superseded", extra={"org": draft.organization_id, "draft_id": stale})
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
        await deps().queue.annotate(feedback.organization_id, feedback.draft_id, **feedback_fields(feedback))

    async def later(decision: ReviewDecided, *, tier: int, attempts: int, why: str, wait_s: float | None) -> None:
        """Send the decision to ``tier`` (1-based), due after its delay or the EHR's ``Retry-After``."""
        due = due_at(policy.delays_s[tier - 1], wait_s)
        when = datetime.fromtimestamp(due, UTC).strftime("%H:%M:%S UTC")
        await deps().queue.annotate(  # before the publish: the tier may carry it out (and clear this) at once
            decision.organization_id,
            decision.draft_id,
            detail=f"the EHR is unavailable ({why}); trying again at {when}",
        )
        key = f"{decision.organization_id}|{await _patient(decision)}".encode()
        await tiers[tier - 1].publish(decision, key=key, headers=headers(attempts, due, why))

    async def give_up(decision: ReviewDecided, *, attempts: int, why: str, source: str) -> None:
        """Dead-letter the decision with its record; the draft stays approved and says what happened."""
        org, patient = decision.organization_id, await _patient(decision)
        key = f"{org}|{patient}"
        log.error("write dead-lettered after its retries", extra={"org": org, "draft_id": decision.draft_id})
        letter = after_retries(decision, home=topics.REVIEW_DECIDED, key=key, attempts=attempts, why=why, source=source)
        await pubs.dead.publish(letter, key=key.encode())
        await deps().queue.annotate(
            org,
            decision.draft_id,
            detail=f"not written: the EHR was unavailable for {attempts} attempts; the decision is kept in the dead "
            f"letters (event {decision.event_id}) to replay",
        )
        await pubs.auditor.record(
            "draft.write-failed",
            organization=org,
            actor=decision.reviewer,
            outcome="failure",
            patient=patient or None,
            drafts=(decision.draft_id,),
            details={"attempts": attempts, "reason": "unavailable"},
            correlation_id=decision.correlation_id,
        )

    async def _patient(decision: ReviewDecided) -> str:
        queued = await deps().queue.get(decision.organization_id, decision.draft_id)
        return queued.draft.patient if queued else ""

    async def carry_out(decision: ReviewDecided, *, tier: int, attempts: int, source: str) -> None:
        """Record the decision and, for an approval, write the draft: ``tier`` 0 is the decision topic, 1–3 the
        retry tiers; ``attempts`` the writes tried so far."""
        d = deps()
        org = decision.organization_id
        queued = await d.queue.get(org, decision.draft_id)
        if queued is None:
            log.error("decision for unknown draft", extra={"org": org, "draft_id": decision.draft_id})
            return
        recorded = decision_fields(decision)
        if decision.decision == "rejected":
            await d.queue.transition(org, decision.draft_id, "pending", "rejected", **recorded)
            return
        if queued.status == "pending":
            done, _ = await d.queue.transition(org, decision.draft_id, "pending", "approved", **recorded)
            if not done:
                return  # decided meanwhile by a decision ahead of this one
        elif queued.status != "approved":
            return  # already written, rejected or failed: a later or repeated decision changes nothing
        if tier == 0 and d.health is not None and d.health.down_for(org):
            await later(decision, tier=1, attempts=attempts, why="down moments ago", wait_s=None)
            return
        key = f"{org}|{queued.draft.patient}".encode()
        draft = queued.draft
        try:
            fhir = d.fhir_for(org, draft.feature or draft.workflow, str(draft.resource.get("resourceType")))
            written = await write_approved(fhir, draft, decision.reviewer, decision.decided_at, decision.edited_text)
        except RetryableError as exc:
            if d.health is not None:
                d.health.failed(org, getattr(exc, "retry_after_s", None))
            why = str(exc) if isinstance(exc, UpstreamUnavailable) else where(exc)  # ours name no data
            log.warning("write failed for now", extra={"org": org, "draft_id": decision.draft_id, "error": why})
            if tier < len(tiers):
                await later(
                    decision, tier=tier + 1, attempts=attempts + 1, why=why, wait_s=getattr(exc, "retry_after_s", None)
                )
            else:
                await give_up(decision, attempts=attempts + 1, why=why, source=source)
            return
        except PermanentError as exc:  # the EHR refused it: say so, then let the middleware dead-letter it
            await d.queue.transition(org, decision.draft_id, "approved", "failed", detail=str(exc))
            await pubs.auditor.record(
                "draft.write-failed",
                organization=org,
                actor=decision.reviewer,
                outcome="failure",
                patient=draft.patient,
                drafts=(decision.draft_id,),
                details={"attempts": attempts + 1, "reason": "refused"},
                correlation_id=decision.correlation_id,
            )
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
        if d.health is not None:
            d.health.answered(org)
        await d.queue.transition(
            org,
            decision.draft_id,
            "approved",
            "written",
            resource_ref=written.resource,
            provenance_ref=written.provenance,
            detail="",
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
        await pubs.auditor.record(
            "draft.written",
            organization=org,
            actor=decision.reviewer,
            outcome="success",
            patient=draft.patient,
            drafts=(decision.draft_id,),
            entities=(written.resource, written.provenance),
            correlation_id=decision.correlation_id,
        )

    @broker.subscriber(
        topics.REVIEW_DECIDED,
        group_id=WRITER_GROUP,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=workers,
        description="Decisions to carry out.",
    )
    async def on_decision(decision: ReviewDecided) -> None:
        await carry_out(decision, tier=0, attempts=0, source=topics.REVIEW_DECIDED)

    def retry_tier(tier: int, topic: str) -> None:
        @broker.subscriber(
            topic,
            group_id=f"{RETRY_GROUP}-{tier}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            description=f"Approved decisions to write again (tier {tier}).",
        )
        async def on_retry(decision: ReviewDecided, message: KafkaMessage) -> None:
            attempts = int(message.headers.get(HEADER_ATTEMPT, "1"))
            due = float(message.headers.get(HEADER_DUE, "0"))
            wait = due - time.time()
            if wait > 0:  # due in the order written, unless the EHR asked for longer than the tier's delay
                await asyncio.sleep(min(wait, policy.delays_s[tier - 1]))
            if due - time.time() > 0.05:  # still not due: round the tier again (not an attempt)
                key = f"{decision.organization_id}|{await _patient(decision)}".encode()
                await tiers[tier - 1].publish(decision, key=key, headers=headers(attempts, due, "not yet due"))
                return
            await carry_out(decision, tier=tier, attempts=attempts, source=topic)

    for tier, topic in enumerate(topics.WRITEBACK_RETRIES, 1):
        retry_tier(tier, topic)

    @broker.subscriber(
        topics.AUDIT,
        group_id=AUDIT_GROUP,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Audit records to copy to their organization's EHR as AuditEvents, where it asks for them.",
    )
    async def on_audit(record: AuditRecorded) -> None:
        d = deps()
        feature = d.audit_feature(record.organization_id)
        if feature is None:
            return
        fhir = d.fhir_for(record.organization_id, feature, "AuditEvent")
        event = validate(record.audit_event)
        await fhir.create(event, if_none_exist=f"_tag={SYSTEM_AUDIT_RECORD}|{record.event_id}")

    return pubs
