"""The dead-letter topic for operators: list what was given up on, and replay it once the cause is mended.

A listing shows ids, sources and reasons only (a dead letter's reason never holds patient data; its record
may, and is not printed). Replaying publishes a letter's record, as it was, to the topic it came from, with
its key, so it is handled again from the start: an event from inference's retry tiers goes back to the
notification topic. Replaying twice is harmless: drafts are keyed by their inputs, decisions by their draft.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ehrflow_contracts import DeadLettered, topics
from ehrflow_runtime.settings import KafkaSettings

REPLAY_TO = {
    topics.NOTIFICATION_RECEIVED: topics.NOTIFICATION_RECEIVED,
    **dict.fromkeys(topics.INFERENCE_RETRIES, topics.NOTIFICATION_RECEIVED),
    topics.DRAFT_PROPOSED: topics.DRAFT_PROPOSED,
    topics.REVIEW_DECIDED: topics.REVIEW_DECIDED,
}
"""Where a dead letter's record goes back to, by the topic it was read from."""


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    letter: DeadLettered

    @property
    def event_id(self) -> str:
        return str((self.letter.payload or {}).get("event_id") or "")

    @property
    def replay_topic(self) -> str | None:
        payload = self.letter.payload or {}
        return REPLAY_TO.get(str(payload.get("topic") or self.letter.source_topic))


async def read_letters(kafka: KafkaSettings) -> list[Letter]:
    """Every dead letter on the topic, oldest first per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topics.DEAD_LETTER, p) for p in consumer.partitions_for_topic(topics.DEAD_LETTER) or []
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Letter] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [Letter(r.partition, r.offset, DeadLettered.model_validate_json(r.value)) for r in records]
        return sorted(found, key=lambda x: (x.letter.received_at, x.partition, x.offset))
    finally:
        await consumer.stop()


def listing(letters: list[Letter]) -> str:
    """One line per letter: where it is, when, whose, from where, which event, why. No record content."""
    lines = [f"{'partition/offset':<17} {'recorded (UTC)':<20} {'organization':<14} {'event id':<36} source → reason"]
    for x in letters:
        when = x.letter.received_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{x.partition}/{x.offset:<15} {when:<20} {x.letter.organization_id:<14} {x.event_id or '-':<36} "
            f"{x.letter.source_topic} → {x.letter.error}"
        )
    return "\n".join(lines)


async def replay(kafka: KafkaSettings, letters: list[Letter]) -> list[Letter]:
    """Publish each letter's record back to where it came from; returns those replayed (others have no
    record, or came from a topic that is not replayed)."""
    chosen = [x for x in letters if x.replay_topic and isinstance((x.letter.payload or {}).get("record"), dict)]
    if not chosen:
        return []
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", max_request_size=kafka.max_message_bytes
    )
    await producer.start()
    try:
        for x in chosen:
            payload: dict[str, Any] = x.letter.payload or {}
            key = payload.get("key")
            topic = x.replay_topic
            assert topic is not None
            await producer.send_and_wait(
                topic, json.dumps(payload["record"]).encode(), key=key.encode() if isinstance(key, str) else None
            )
    finally:
        await producer.stop()
    return chosen
