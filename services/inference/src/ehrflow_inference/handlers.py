"""Inference's Kafka surface: consumes notification events, publishes drafts and outcomes.

Thin: the work is in ``service.handle``. Delivery is at-least-once (offsets are committed after the
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
from ehrflow_inference import service
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Registry

log = logging.getLogger("ehrflow.inference")

GROUP_ID = "ehrflow-inference"


@dataclass
class Deps:
    registry: Registry
    fhir_for: Callable[[str], FhirClient]


def declare(broker: KafkaBroker, deps: Callable[[], Deps]) -> None:
    drafts = broker.publisher(topics.DRAFT_PROPOSED, schema=DraftProposed, description="Drafts awaiting review.")
    outcomes = broker.publisher(
        topics.INFERENCE_OUTCOME, schema=InferenceOutcome, description="Events that produced no draft, and why."
    )
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
        org = d.registry.get(event.organization_id)
        contract = org.workflows.news2 if org else None
        if org is None or contract is None:
            return
        key = f"{event.organization_id}|{event.patient or ''}".encode()
        result = await service.handle(event, contract, d.fhir_for(org.id))
        if isinstance(result, DraftProposed):
            await drafts.publish(result, key=key)
        elif isinstance(result, InferenceOutcome):
            await outcomes.publish(result, key=key)
