"""Event models, one per topic (see ``topics``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ehrflow_contracts.audit import audit_event
from ehrflow_contracts.envelope import Envelope

Flavour = Literal["r4-backport", "r4b-backport", "r5", "r4-classic"]
NotificationType = Literal["handshake", "heartbeat", "event-notification", "query-status", "query-event"]
ContentLevel = Literal["empty", "id-only", "full-resource"]
OutcomeReason = Literal[
    "insufficient-data",
    "not-applicable",
    "invalid-input",
    "forbidden",
    "not-found",
    "superseded",
    "model-unavailable",
    "ehr-unavailable",
    "invalid-model-output",
    "budget-exceeded",
]
"""Why an event that concerned a workflow gave no draft (README: "Inference outcomes")."""


class Reference(BaseModel):
    """A FHIR reference as ``Type/id`` plus what the sender wrote."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reference: str | None = Field(default=None, description="Normalized `Type/id`, when one could be derived.")
    original: str = Field(description="The reference exactly as the sender wrote it.")


class NotificationReceived(Envelope):
    """One notification event an EHR sent to ingest, normalized across Subscription flavours."""

    subscription: str | None = Field(default=None, description="`Subscription/id` at the sender, if given.")
    topic: str | None = Field(default=None, description="SubscriptionTopic canonical (topic-based only).")
    flavour: Flavour
    notification_type: NotificationType
    content_level: ContentLevel
    event_number: int | None = Field(default=None, description="The sender's event number, if any.")
    events_since_subscription_start: int | None = None
    focus: Reference | None = Field(default=None, description="The resource the event is about.")
    additional_context: tuple[Reference, ...] = ()
    patient: str | None = Field(default=None, description="`Patient/id` the event concerns, when known.")
    resource: dict[str, Any] | None = Field(
        default=None, description="The focus resource, when the sender included it (full-resource)."
    )
    interaction: Literal["create", "update", "delete"] | None = Field(
        default=None, description="What happened to the focus, when the sender says (classic PUT/DELETE, Medplum)."
    )
    declared_subscription: str | None = Field(
        default=None,
        description="The declared subscription (`ingest.subscriptions[].name`) whose route it came in on, if any.",
    )
    dedupe_key: str = Field(description="Key under which duplicates of this event are recognised.")
    recovered: bool = Field(
        default=False,
        description="True when ingest fetched this event itself (gap, empty ping or re-activated subscription) "
        "instead of receiving it: from `$events`, or from a `_lastUpdated` search of the subscription's criteria.",
    )


class SubscriptionSignal(Envelope):
    """A handshake or heartbeat: the subscription is alive."""

    subscription: str | None = None
    topic: str | None = None
    notification_type: NotificationType
    status: str | None = Field(default=None, description="Subscription status the sender reported.")
    events_since_subscription_start: int | None = None


class NotificationQuarantined(Envelope):
    """Input ingest could not accept, kept for inspection (may contain PHI: restrict the topic)."""

    reason: str = Field(description="Why it was rejected (the OperationOutcome diagnostics).")
    path: str
    content_type: str | None = None
    body_base64: str | None = Field(
        default=None,
        description="The raw request body, base64-encoded: its first `quarantine_max_bytes` when it is larger "
        "(`truncated`), and none for an organization that keeps ids only on the bus.",
    )
    body_bytes: int = Field(default=0, description="The whole body's size.")
    body_sha256: str = Field(default="", description="SHA-256 (hex) of the whole body, to match the sender's copy.")
    truncated: bool = Field(default=False, description="`body_base64` holds only the start of the body.")


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str


class Evidence(BaseModel):
    """One input a draft used, as a reviewer reads it: what it is, its value with unit, and when."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    reference: str = Field(description="Versioned reference of the input (one of the draft's `basis`).")
    label: str = Field(description="What it is: the code's text or display, e.g. `Respiratory rate`.")
    value: str | None = Field(default=None, description="Its value as charted, e.g. `22`, `Alert`, `active`.")
    unit: str | None = Field(default=None, description="The value's unit, e.g. `/min`, `%`, `Cel`.")
    when: datetime | None = Field(default=None, description="When it was measured, recorded or started.")


OverrideReason = Literal[
    "not-clinically-relevant",
    "data-incorrect",
    "already-addressed",
    "disagree-with-result",
    "patient-preference",
    "other",
]
OVERRIDE_REASONS: dict[OverrideReason, str] = {
    "not-clinically-relevant": "Not clinically relevant for this patient",
    "data-incorrect": "The input data are wrong or incomplete",
    "already-addressed": "Already addressed",
    "disagree-with-result": "I disagree with the result",
    "patient-preference": "Patient preference",
    "other": "Other (see comment)",
}
"""Why a clinician overrides (rejects) a draft: the codes the review screen and CDS Hooks feedback offer,
in the code system ``https://ehrflow.dev/fhir/CodeSystem/override-reason``."""
OVERRIDE_REASON_SYSTEM = "https://ehrflow.dev/fhir/CodeSystem/override-reason"


class DraftProposed(Envelope):
    """An AI-generated FHIR resource awaiting human review."""

    draft_id: str = Field(description="Stable id: the same inputs always give the same draft id.")
    workflow: str
    model: ModelRef
    patient: str = Field(description="`Patient/id`.")
    resource: dict[str, Any] = Field(description="The drafted FHIR resource (R4), without an id.")
    basis: tuple[str, ...] = Field(description="Versioned references of the inputs used.")
    summary: dict[str, Any] = Field(default_factory=dict, description="Model-specific figures for reviewers.")
    auto_approve: bool = Field(
        default=False, description="The contract's auto-approval condition held: written without review."
    )
    feature: str | None = Field(
        default=None,
        description="The organization feature whose SMART scopes writing this draft uses (the workflow's); "
        "absent: the workflow's name.",
    )
    expires_at: datetime | None = Field(default=None, description="Not decided by then, the draft expires.")
    evidence: tuple[Evidence, ...] = Field(
        default=(), description="The inputs as the reviewer sees them: label, value, unit and time of each."
    )
    approver_role: str | None = Field(
        default=None, description="The role a clinician needs to approve this draft (its contract's); none: any."
    )


class InferenceOutcome(Envelope):
    """A notification that produced no draft, and why."""

    workflow: str
    outcome: OutcomeReason = Field(
        description="`invalid-input`: the trigger resource is not valid FHIR (`detail` names the fields); "
        '`forbidden`: `missing` names the scope; the others as README "Inference outcomes" lists them.'
    )
    patient: str | None = None
    missing: tuple[str, ...] = Field(default=(), description="Inputs (or scopes) that were required but absent.")
    detail: str = ""


class ReviewDecided(Envelope):
    """A clinician's decision on a draft."""

    draft_id: str
    decision: Literal["approved", "rejected"]
    reviewer: str = Field(description="FHIR reference of the reviewer, e.g. `Practitioner/123`.")
    decided_at: datetime
    reason: str | None = Field(default=None, description="The reviewer's comment (free text; may hold PHI).")
    reason_code: OverrideReason | None = Field(
        default=None,
        description="Why a draft was overridden: a code of `OVERRIDE_REASONS` (CDS Hooks `overrideReason`).",
    )
    edited_text: str | None = Field(
        default=None,
        description="The reviewer's revision of a text output (approved with edits); the Provenance records it.",
    )


class CardFeedback(Envelope):
    """A CDS client's feedback on a draft's card (CDS Hooks 2.0 feedback)."""

    draft_id: str
    service: str = Field(description="The CDS service whose card it was, e.g. `ehrflow-drafts`.")
    outcome: Literal["accepted", "overridden"]
    reason_system: str | None = Field(default=None, description="`overrideReason.reason.system`.")
    reason_code: str | None = Field(default=None, description="`overrideReason.reason.code`.")
    comment: str | None = Field(default=None, description="`overrideReason.userComment` (free text; may hold PHI).")
    outcome_at: datetime = Field(description="`outcomeTimestamp`: when the clinician acted on the card.")


class WritebackCompleted(Envelope):
    """The result of writing an approved draft to its organization's EHR."""

    draft_id: str
    status: Literal["written", "failed"]
    resource: str | None = Field(default=None, description="`Type/id` of the written resource.")
    provenance: str | None = Field(default=None, description="`Provenance/id` written with it.")
    detail: str = ""


class DeadLettered(Envelope):
    """A message a consumer gave up on, with the reason."""

    source_topic: str
    error: str
    payload: dict[str, Any] | None = None


class AuditRecorded(Envelope):
    """Who did what, for which organization, with which outcome. Ids and references only: never a token,
    an assertion, a key or patient data beyond a reference."""

    action: str = Field(
        description="e.g. `token.issued`, `session.started`, `review.viewed`, `review.decided`, `draft.written`."
    )
    outcome: Literal["success", "failure"]
    actor: str = Field(description="The calling service, or the user (`Practitioner/…`) of a session.")
    details: dict[str, str | int | float | None] = Field(default_factory=dict)
    source: str = Field(default="-", description="The ehrflow service that recorded it (`auth`, `writeback`).")
    patient: str | None = Field(default=None, description="`Patient/…` the action concerned, if one.")
    entities: tuple[str, ...] = Field(default=(), description="`Type/id` of FHIR resources read or written.")
    drafts: tuple[str, ...] = Field(default=(), description="Ids of the drafts the action concerned.")

    @computed_field(  # type: ignore[prop-decorator]
        description="The record as a FHIR R4 AuditEvent, IHE BALP style (`ehrflow_contracts.audit`)."
    )
    @property
    def audit_event(self) -> dict[str, Any]:
        return audit_event(self)
