"""A record no consumer can handle never stops its partition (the real broker, the stack's services).

On each consumed topic a poison record goes first and a good record with the same key (so the same
partition) right behind it. The poison one must reach the dead-letter topic with its reason and its
position; the good one must be handled. The stack runs inference and writeback with three attempts
(``ConsumerPolicy``'s default) and 0.2 s back-off.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed, ModelRef, ReviewDecided, topics
from ehrflow_devstack.kafka_read import read_records
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


async def _publish(stack: Stack, topic: str, *records: tuple[bytes, bytes]) -> None:
    assert stack.broker
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.url, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _wait(check: Any, timeout: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if found := await check():
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("not seen in time")
        await asyncio.sleep(0.5)


def _letters_for(stack: Stack, key: str) -> Any:
    async def check() -> list[dict[str, Any]]:
        assert stack.broker
        return [
            value
            for value, _ in await read_records(stack.broker.url, topics.DEAD_LETTER)
            if (value.get("payload") or {}).get("key") == key
        ]

    return check


def _draft(draft_id: str, patient: str, workflow: str = "news2", **fields: Any) -> DraftProposed:
    return DraftProposed(
        organization_id="org1",
        correlation_id=draft_id,
        draft_id=draft_id,
        workflow=workflow,
        model=ModelRef(name="m", version="1"),
        patient=patient,
        resource={"resourceType": "RiskAssessment", "status": "preliminary", "subject": {"reference": patient}},
        basis=(),
        **fields,
    )


async def test_a_poison_notification_event_is_dead_lettered_and_the_next_one_is_handled(stack: Stack) -> None:
    assert stack.broker
    patient = f"Patient/poison-{uuid.uuid4().hex[:8]}"
    key = f"org1|{patient}"
    good_trigger = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}
    good = {
        "organization_id": "org1",
        "correlation_id": f"good-{patient}",
        "flavour": "r4-classic",
        "notification_type": "event-notification",
        "content_level": "full-resource",
        "focus": {"reference": "Observation/o1", "original": "Observation/o1"},
        "resource": {**good_trigger, "subject": patient},  # a string: the shape that used to raise forever
        "dedupe_key": f"good-{patient}",
        "patient": patient,
    }
    poison = {"organization_id": "org1", "correlation_id": f"poison-{patient}", "flavour": 42}
    await _publish(
        stack,
        topics.NOTIFICATION_RECEIVED,
        (key.encode(), json.dumps(poison).encode()),
        (key.encode(), json.dumps(good).encode()),
    )
    [letter] = await _wait(_letters_for(stack, key))
    assert letter["source_topic"] == topics.NOTIFICATION_RECEIVED
    assert letter["correlation_id"] == f"poison-{patient}"
    assert letter["error"].startswith("data does not validate as ")
    assert isinstance(letter["payload"]["offset"], int) and letter["payload"]["record"] == poison

    async def outcome() -> list[dict[str, Any]]:
        assert stack.broker
        records = await read_records(stack.broker.url, topics.INFERENCE_OUTCOME)
        return [v for v, _ in records if v["correlation_id"] == f"good-{patient}"]

    [handled] = await _wait(outcome)
    assert (handled["outcome"], handled["detail"]) == (
        "invalid-input",
        "the trigger is not a valid Observation at subject",
    )


async def test_poison_drafts_and_decisions_are_dead_lettered_and_those_behind_them_are_handled(stack: Stack) -> None:
    assert stack.redis and stack.config
    run = uuid.uuid4().hex[:8]
    patient = f"Patient/poison-{run}"
    key = f"org1|{patient}"
    redis = Redis.from_url(stack.redis.url)
    queue = stack.config.review_queue(redis)
    try:
        # draft.proposed: a record that is not a draft, then a draft, and a draft the writer cannot write.
        # Another workflow's, so that neither draft supersedes the other (same patient, same partition).
        broken = _draft(f"broken-{run}", patient, "tumor-board", auto_approve=True)
        broken_json = json.loads(broken.model_dump_json())
        broken_json["resource"]["meta"] = "not an object"  # writing it raises AttributeError, on every try
        good = _draft(f"good-{run}", patient)
        await _publish(
            stack,
            topics.DRAFT_PROPOSED,
            (key.encode(), b'{"organization_id": "org1", "draft_id": []}'),
            (key.encode(), good.model_dump_json().encode()),
            (key.encode(), json.dumps(broken_json).encode()),
        )
        queued = await _wait(lambda: queue.get("org1", good.draft_id))
        assert queued.status == "pending"

        # review.decided: the auto-approval of the broken draft is tried three times, then dead-lettered;
        # a rejection behind it, on the same partition, is carried out.
        rejection = ReviewDecided(
            organization_id="org1",
            correlation_id=good.correlation_id,
            draft_id=good.draft_id,
            decision="rejected",
            reviewer="Practitioner/r1",
            decided_at=datetime.now(UTC),
            reason="not relevant",
        )
        await _publish(stack, topics.REVIEW_DECIDED, (key.encode(), rejection.model_dump_json().encode()))

        async def rejected() -> bool:
            q = await queue.get("org1", good.draft_id)
            return q is not None and q.status == "rejected"

        await _wait(rejected)

        async def both() -> list[dict[str, Any]]:
            found = await _letters_for(stack, key)()
            return found if len(found) >= 2 else []

        letters = await _wait(both)
        by_topic = {letter["source_topic"]: letter for letter in letters}
        assert by_topic[topics.DRAFT_PROPOSED]["error"].startswith("data does not validate as ")
        decided = by_topic[topics.REVIEW_DECIDED]
        assert decided["error"].startswith("AttributeError at writer.py:")
        assert decided["error"].endswith("after 3 attempts")
        assert decided["payload"]["record"]["draft_id"] == broken.draft_id
        assert len(letters) == 2, "each poison record is dead-lettered once"
    finally:
        await redis.aclose()
