"""Reading a topic from the beginning, for the demo's report and for tests (no consumer group); publishing
events as a service would, for tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from ehrflow_contracts import Envelope
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.topic_reader import read_topic as read_whole_topic

Record = dict[str, Any]


async def read_records(bootstrap: str, topic: str) -> list[tuple[Record, dict[str, bytes]]]:
    """Every record currently on the topic, with its headers (for async callers)."""
    records = await read_whole_topic(KafkaSettings(bootstrap_servers=bootstrap), topic)
    return [(json.loads(r.value or b"null"), dict(r.headers or [])) for r in records]


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record currently on the topic (values as JSON)."""
    return [value for value, _ in asyncio.run(read_records(bootstrap, topic))]


def wait_for_records(
    bootstrap: str, topic: str, done: Callable[[list[Record]], bool], timeout: float = 120.0
) -> list[Record]:
    """Re-read the topic until ``done(records)`` holds; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_topic(bootstrap, topic)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: condition not met after {timeout:.0f}s ({len(records)} records)")
        time.sleep(1.0)


async def publish_events(bootstrap: str, topic: str, events: Sequence[Envelope]) -> None:
    """Publish events as ehrflow's services do: JSON, keyed ``organization|patient``, acknowledged by all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            key = f"{event.organization_id}|{getattr(event, 'patient', None)}".encode()
            await producer.send_and_wait(topic, event.model_dump_json().encode(), key=key)
    finally:
        await producer.stop()
