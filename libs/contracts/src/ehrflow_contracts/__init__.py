"""ehrflow's shared contracts: what travels on the bus, and under which topic.

Pure data: pydantic models and constants, no I/O. Every service imports its topic names and event
models from here so that a topic is named once and an event has one definition.
"""

from ehrflow_contracts import topics
from ehrflow_contracts.envelope import Envelope
from ehrflow_contracts.events import (
    AuditRecorded,
    CardFeedback,
    ContentLevel,
    DeadLettered,
    DraftProposed,
    Evidence,
    Flavour,
    InferenceOutcome,
    ModelRef,
    NotificationQuarantined,
    NotificationReceived,
    NotificationType,
    ReviewDecided,
    SubscriptionSignal,
    WritebackCompleted,
)

__all__ = [
    "AuditRecorded",
    "CardFeedback",
    "ContentLevel",
    "DeadLettered",
    "DraftProposed",
    "Envelope",
    "Evidence",
    "Flavour",
    "InferenceOutcome",
    "ModelRef",
    "NotificationQuarantined",
    "NotificationReceived",
    "NotificationType",
    "ReviewDecided",
    "SubscriptionSignal",
    "WritebackCompleted",
    "topics",
]
