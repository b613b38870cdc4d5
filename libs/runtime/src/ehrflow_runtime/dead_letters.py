"""The dead-letter topic for operators: list what was given up on, and replay it once the cause is mended.
Both ``ehrflow-inference dead-letters`` and ``ehrflow-writeback dead-letters`` are this (``add_command``).

A listing shows ids, sources and reasons only (a dead letter's reason never holds patient data; its record
may, and is not printed). Replaying publishes a letter's record, as it was, to the topic it came from, with
its key, so it is handled again from the start: an event from inference's retry tiers goes back to the
notification topic, a decision from writeback's retry tiers to the decision topic. Replaying twice is
harmless: drafts are keyed by their inputs, writes by their draft (conditional creates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic_settings import BaseSettings, SettingsConfigDict

from ehrflow_contracts import DeadLettered, Envelope, topics
from ehrflow_runtime.broker import client_options
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.topic_reader import read_topic

REPLAY_TO = {
    topics.NOTIFICATION_RECEIVED: topics.NOTIFICATION_RECEIVED,
    **dict.fromkeys(topics.INFERENCE_RETRIES, topics.NOTIFICATION_RECEIVED),
    topics.DRAFT_PROPOSED: topics.DRAFT_PROPOSED,
    topics.REVIEW_DECIDED: topics.REVIEW_DECIDED,
    **dict.fromkeys(topics.WRITEBACK_RETRIES, topics.REVIEW_DECIDED),
}
"""Where a dead letter's record goes back to, by the topic it was read from."""


def after_retries(event: Envelope, *, home: str, key: str, attempts: int, why: str, source: str) -> DeadLettered:
    """The dead letter of an event given up on after its retry tiers: the record as it was, its key, and the
    topic a replay sends it back to (``home``)."""
    return DeadLettered(
        organization_id=event.organization_id,
        correlation_id=event.correlation_id,
        source_topic=source,
        error=f"{why} (after {attempts} attempts)",
        payload={
            "topic": home,
            "event_id": event.event_id,
            "key": key,
            "attempts": attempts,
            "record": event.model_dump(mode="json"),
        },
    )


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
    """Every dead letter on the topic, oldest first."""
    records = await read_topic(kafka, topics.DEAD_LETTER)
    found = [Letter(r.partition, r.offset, DeadLettered.model_validate_json(r.value)) for r in records if r.value]
    return sorted(found, key=lambda x: (x.letter.received_at, x.partition, x.offset))


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
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", max_request_size=kafka.max_message_bytes)
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


class _KafkaOnly(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EHRFLOW_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()


def add_command(sub: Any) -> None:
    """``dead-letters list|replay`` on a service's command line (``sub``: its argparse subparsers)."""
    letters = sub.add_parser("dead-letters", help="list or replay dead letters")
    letters.add_argument("action", choices=["list", "replay"])
    letters.add_argument("--org", help="only this organization's")
    letters.add_argument("--event-id", action="append", default=[], help="replay this event's letter (repeatable)")
    letters.add_argument("--all", action="store_true", help="replay every letter listed")


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.action == "replay" and not (args.all or args.event_id):
        parser.error("replay needs --event-id ID or --all")
    return asyncio.run(_dead_letters(args))


async def _dead_letters(args: argparse.Namespace) -> int:
    kafka = _KafkaOnly().kafka
    letters = [x for x in await read_letters(kafka) if args.org is None or x.letter.organization_id == args.org]
    if args.action == "list":
        print(listing(letters))
        return 0
    if not args.all:
        wanted = set(args.event_id)
        letters = [x for x in letters if x.event_id in wanted]
        missing = wanted - {x.event_id for x in letters}
        if missing:
            print(f"no dead letter for event {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
    replayed = await replay(kafka, letters)
    for x in replayed:
        print(f"replayed {x.event_id or f'{x.partition}/{x.offset}'} to {x.replay_topic}")
    skipped = len(letters) - len(replayed)
    if skipped:
        print(f"{skipped} letter(s) hold no record to replay, or come from a topic that is not replayed")
    return 0
