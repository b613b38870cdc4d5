"""Inference's Kafka surface: consumes notification events, publishes drafts, shadow drafts and outcomes,
and moves events that failed for now through the retry tiers (``retries``).

Thin: the work is in ``pipeline.evaluate``. Delivery is at-least-once (offsets are committed after the
handler returns); redelivery is harmless because draft ids are derived from their inputs. A model or EHR
that fails for now (``RetryableError``) sends the event to the retry tiers, so the partition moves on; any
other error is raised to the broker's middleware (``ehrflow_runtime.consumers``), which dead-letters it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from ehrflow_contracts import DeadLettered, DraftProposed, InferenceOutcome, NotificationReceived, topics
from ehrflow_inference.enabled import Enabled
from ehrflow_inference.evaluation import FhirReader
from ehrflow_inference.models import Models
from ehrflow_inference.pipeline import WorkflowUnavailable, evaluate, gave_up
from ehrflow_inference.retries import Parking, Retrying, key_of
from ehrflow_runtime.consumers import where
from ehrflow_runtime.errors import RetryableError
from ehrflow_runtime.retry_tiers import HEADER_ATTEMPT, HEADER_DUE, RetryPolicy

log = logging.getLogger("ehrflow.inference")

GROUP_ID = "ehrflow-inference"
RETRY_GROUP_ID = "ehrflow-inference-retry"
"""Each tier is a group of its own (``-1``, ``-2``, ``-3``), so a replica joining or leaving rebalances one
consumer per group, not every tier's at once."""

BEHIND = "behind an earlier event of this patient"


def _why(exc: BaseException) -> str:
    """Why an attempt failed, without data: the workflow and the error's type and line."""
    return str(exc) if isinstance(exc, WorkflowUnavailable) else where(exc)


@dataclass
class Deps:
    enabled: dict[str, tuple[Enabled, ...]]
    """Each organization's enabled workflows (an organization not in it runs none)."""
    fhir_for: Callable[[str, str], FhirReader]
    """The FHIR client of an organization for a feature."""
    models: Models
    parking: Parking | None = None
    """Where keys wait while one of their events is retried; None: retryable errors are redelivered in place."""


def declare(
    broker: KafkaBroker, deps: Callable[[], Deps], policy: RetryPolicy | None = None, *, workers: int = 1
) -> None:
    """``workers`` consumers in the group take notification partitions each, so that many events are evaluated
    at once (one partition, one patient, still one at a time, in order)."""
    policy = policy or RetryPolicy()
    drafts = broker.publisher(topics.DRAFT_PROPOSED, schema=DraftProposed, description="Drafts awaiting review.")
    shadows = broker.publisher(
        topics.DRAFT_SHADOWED, schema=DraftProposed, description="Drafts of shadow-mode contracts: never reviewed."
    )
    outcomes = broker.publisher(
        topics.INFERENCE_OUTCOME, schema=InferenceOutcome, description="Events that produced no draft, and why."
    )
    channels = {"draft": drafts, "shadow": shadows, "outcome": outcomes}
    dead = broker.publisher(topics.DEAD_LETTER, schema=DeadLettered, description="Events inference gave up on.")
    tiers = tuple(
        broker.publisher(topic, schema=NotificationReceived, description=f"Events to try again (tier {tier}).")
        for tier, topic in enumerate(topics.INFERENCE_RETRIES, 1)
    )

    async def run(event: NotificationReceived, d: Deps) -> None:
        org = event.organization_id
        results = await evaluate(event, d.enabled.get(org, ()), lambda feature: d.fhir_for(org, feature), d.models)
        for result in results:
            patient = getattr(result.event, "patient", None) or event.patient or ""
            await channels[result.kind].publish(result.event, key=f"{org}|{patient}".encode())

    @broker.subscriber(
        topics.NOTIFICATION_RECEIVED,
        group_id=GROUP_ID,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=workers,
        description="Notification events from ingest.",
    )
    async def on_notification(event: NotificationReceived) -> None:
        d = deps()
        if not d.enabled.get(event.organization_id):
            return
        if d.parking is None:
            await run(event, d)
            return
        retrying = Retrying(policy, tiers, dead, d.parking)
        if await d.parking.occupied(key_of(event)):
            await retrying.later(event, tier=1, attempt=0, why=BEHIND)
            return
        try:
            await run(event, d)
        except RetryableError as exc:
            log.warning("evaluation failed for now", extra={"org": event.organization_id, "error": _why(exc)})
            await retrying.later(event, tier=1, attempt=1, why=_why(exc))

    def retry_tier(tier: int, topic: str) -> None:
        @broker.subscriber(
            topic,
            group_id=f"{RETRY_GROUP_ID}-{tier}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            description=f"Events to try again (tier {tier}).",
        )
        async def on_retry(event: NotificationReceived, message: KafkaMessage) -> None:
            d = deps()
            headers = message.headers
            attempt = int(headers.get(HEADER_ATTEMPT, "1"))
            wait = float(headers.get(HEADER_DUE, "0")) - time.time()
            if wait > 0:  # due in the order written: the tier's records all wait the same delay
                await asyncio.sleep(min(wait, policy.delays_s[tier - 1]))
            if d.parking is None:
                await run(event, d)
                return
            retrying = Retrying(policy, tiers, dead, d.parking)
            key = key_of(event)
            head = await d.parking.first(key)
            if head is not None and head != event.event_id:
                await retrying.later(event, tier=tier, attempt=attempt, why=BEHIND)
                return
            try:
                await run(event, d)
            except RetryableError as exc:
                if tier < len(tiers):
                    await retrying.later(event, tier=tier + 1, attempt=attempt + 1, why=_why(exc))
                else:
                    log.error("event dead-lettered after its retries", extra={"org": event.organization_id})
                    await retrying.give_up(event, attempts=attempt + 1, why=_why(exc), source=topic)
                    if isinstance(exc, WorkflowUnavailable):
                        await outcomes.publish(gave_up(event, exc, attempt + 1), key=key.encode())
                return
            await d.parking.leave(key, event.event_id)

    for tier, topic in enumerate(topics.INFERENCE_RETRIES, 1):
        retry_tier(tier, topic)
