"""Topic names, defined once: ``ehrflow.<domain>.<entity>.<event>.v<N>``.

A breaking change to an event is a new topic version, never an edit in place.
"""

NOTIFICATION_RECEIVED = "ehrflow.ingest.notification.received.v1"
"""One record per notification event an EHR sent us (ingest → inference)."""

SUBSCRIPTION_SIGNAL = "ehrflow.ingest.subscription.signal.v1"
"""Handshakes and heartbeats: liveness of each EHR subscription (control topic)."""

NOTIFICATION_QUARANTINED = "ehrflow.ingest.notification.quarantined.v1"
"""Raw bytes of notifications that could not be parsed, kept for inspection."""

DRAFT_PROPOSED = "ehrflow.inference.draft.proposed.v1"
"""An AI draft waiting for human review (inference → writeback)."""

DRAFT_SHADOWED = "ehrflow.inference.draft.shadowed.v1"
"""Drafts of contracts in shadow mode: recorded to compare a model with the live one, never reviewed or written."""

INFERENCE_OUTCOME = "ehrflow.inference.outcome.recorded.v1"
"""Why a notification produced no draft (insufficient data, not applicable)."""

INFERENCE_RETRIES: tuple[str, ...] = (
    "ehrflow.inference.retry.first.v1",
    "ehrflow.inference.retry.second.v1",
    "ehrflow.inference.retry.third.v1",
)
"""Notification events inference tries again after a model or an EHR failed for now, one topic per delay tier
(the attempt and the instant it is due travel in headers)."""

REVIEW_DECIDED = "ehrflow.writeback.review.decided.v1"
"""A clinician approved or rejected a draft."""

WRITEBACK_RETRIES: tuple[str, ...] = (
    "ehrflow.writeback.retry.first.v1",
    "ehrflow.writeback.retry.second.v1",
    "ehrflow.writeback.retry.third.v1",
)
"""Approved decisions whose write found the EHR unavailable (429, 5xx, timeout), one topic per delay tier."""

CARD_FEEDBACK = "ehrflow.writeback.card.feedback.v1"
"""What a clinician did with a draft's CDS Hooks card in the EHR: accepted, or overridden and why."""

WRITEBACK_COMPLETED = "ehrflow.writeback.write.completed.v1"
"""An approved draft was written to its organization's EHR (or definitively failed)."""

AUDIT = "ehrflow.auth.audit.recorded.v1"
"""Security-relevant facts, each with its FHIR AuditEvent: tokens issued or refused, launches, sessions (auth);
views of drafts, decisions, writes (writeback). Never a token, a key or free text."""

DEAD_LETTER = "ehrflow.platform.message.deadlettered.v1"
"""Messages a consumer could not process for a permanent reason."""

ALL: tuple[str, ...] = (
    NOTIFICATION_RECEIVED,
    SUBSCRIPTION_SIGNAL,
    NOTIFICATION_QUARANTINED,
    DRAFT_PROPOSED,
    DRAFT_SHADOWED,
    INFERENCE_OUTCOME,
    *INFERENCE_RETRIES,
    REVIEW_DECIDED,
    *WRITEBACK_RETRIES,
    CARD_FEEDBACK,
    WRITEBACK_COMPLETED,
    AUDIT,
    DEAD_LETTER,
)
