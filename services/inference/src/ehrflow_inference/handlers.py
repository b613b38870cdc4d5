"""Inference's Kafka surface: consumes notification events, publishes drafts and outcomes.

Thin: the work is in ``pipeline.evaluate``. Delivery is at-least-once (offsets are committed after the
handler returns); redelivery is harmless because draft ids are derived from their inputs. Errors are
raised: the broker's middleware (``ehrflow_runtime.consumers``) redelivers, retries or dead-letters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from ehrflow_contracts import DeadLettered, DraftProposed, InferenceOutcome, NotificationReceived, topics
from ehrflow_inference.enabled import Enabled
from ehrflow_inference.evaluation import FhirReader
from ehrflow_inference.models import Models
from ehrflow_inference.pipeline import evaluate

log = logging.getLogger("ehrflow.inference")

GROUP_ID = "ehrflow-inference"


@dataclass
class Deps:
    enabled: dict[str, tuple[Enabled, ...]]
    """Each organization's enabled workflows (an organization not in it runs none)."""
    fhir_for: Callable[[str, str], FhirReader]
    """The FHIR client of an organization for a feature."""
    models: Models


def declare(broker: KafkaBroker, deps: Callable[[], Deps]) -> None:
    drafts = broker.publisher(topics.DRAFT_PROPOSED, schema=DraftProposed, description="Drafts awaiting review.")
    shadows = broker.publisher(
        topics.DRAFT_SHADOWED, schema=DraftProposed, description="Drafts of shadow-mode contracts: never reviewed."
    )
    outcomes = broker.publisher(
        topics.INFERENCE_OUTCOME, schema=InferenceOutcome, description="Events that produced no draft, and why."
    )
    channels = {"draft": drafts, "shadow": shadows, "outcome": outcomes}
    # Written by the broker's middleware (ehrflow_runtime.consumers); declared here for the AsyncAPI document.
    broker.publisher(topics.DEAD_LETTER, schema=DeadLettered, description="Events inference gave up on.")

    @broker.subscriber(
        topics.NOTIFICATION_RECEIVED,
        group_id=GROUP_ID,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Notification events from ingest.",
    )
    async def on_notification(event: NotificationReceived) -> None:
        d = deps()
        enabled = d.enabled.get(event.organization_id, ())
        if not enabled:
            return
        org = event.organization_id
        results = await evaluate(event, enabled, lambda feature: d.fhir_for(org, feature), d.models)
        for result in results:
            patient = getattr(result.event, "patient", None) or event.patient or ""
            await channels[result.kind].publish(result.event, key=f"{org}|{patient}".encode())
