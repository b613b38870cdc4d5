"""The review view rebuilt from the log: Kafka is the record, Redis a view of it.

When writeback starts and finds no view in Redis (a new Redis, or one that was flushed or lost), it reads
``draft.proposed``, ``review.decided``, ``card.feedback`` and ``writeback.completed`` from their beginning
(outside its consumer groups: nothing is committed, nothing is written to an EHR) and applies them with the
queue's own idempotent steps: drafts queued (and superseded ones marked stale), then decisions, feedback and
write results in order. Then it marks the view built. What the consumers do meanwhile on other replicas is
the same steps, so the two can interleave. Drafts older than the queue's time-to-live are skipped, as they
would have expired; keep the topics' retention at least that long.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from ehrflow_contracts import CardFeedback, DraftProposed, ReviewDecided, WritebackCompleted, topics
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.topic_reader import read_topic
from ehrflow_writeback.queue import ReviewQueue
from ehrflow_writeback.records import decision_fields, feedback_fields

log = logging.getLogger("ehrflow.writeback")


@dataclass(frozen=True)
class Rebuilt:
    drafts: int
    decisions: int
    feedback: int
    completions: int


E = TypeVar("E", DraftProposed, ReviewDecided, CardFeedback, WritebackCompleted)


async def _events(kafka: KafkaSettings, topic: str, model: type[E]) -> list[E]:
    found = []
    for record in await read_topic(kafka, topic):
        try:
            found.append(model.model_validate_json(record.value or b""))
        except ValidationError:
            log.warning("record skipped in rebuild: not a valid event", extra={"topic": topic})
    return found


async def rebuild(kafka: KafkaSettings, queue: ReviewQueue) -> Rebuilt:
    """Apply the log to the queue (see the module's docstring)."""
    horizon = time.time() - queue.ttl_s
    drafts = [
        d for d in await _events(kafka, topics.DRAFT_PROPOSED, DraftProposed) if d.received_at.timestamp() > horizon
    ]
    for draft in sorted(drafts, key=lambda d: d.received_at):
        await queue.add(draft, queued_at=draft.received_at.timestamp())
        await queue.supersede(draft)
    decisions = await _events(kafka, topics.REVIEW_DECIDED, ReviewDecided)
    for decision in sorted(decisions, key=lambda d: d.decided_at):
        fields = decision_fields(decision)
        await queue.transition(decision.organization_id, decision.draft_id, "pending", decision.decision, **fields)
    feedback = await _events(kafka, topics.CARD_FEEDBACK, CardFeedback)
    for item in feedback:
        await queue.annotate(item.organization_id, item.draft_id, **feedback_fields(item))
    completions = await _events(kafka, topics.WRITEBACK_COMPLETED, WritebackCompleted)
    for done in completions:
        fields = {"resource_ref": done.resource or "", "provenance_ref": done.provenance or "", "detail": done.detail}
        await queue.transition(done.organization_id, done.draft_id, "approved", done.status, **fields)
    await queue.mark_view_built()
    counts = Rebuilt(len(drafts), len(decisions), len(feedback), len(completions))
    log.info("review view rebuilt from the log", extra=counts.__dict__)
    return counts
