"""Reading a topic from the beginning, for the demo's report and for tests (no consumer group); publishing
events as a service would, for tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ehrflow_contracts import Envelope

Record = dict[str, Any]


async def read_records(bootstrap: str, topic: str) -> list[tuple[Record, dict[str, bytes]]]:
    """Every record currently on the topic, with its headers (for async callers)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - topic metadata may not be cached yet
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[tuple[Record, dict[str, bytes]]] = []
        while not await _caught_up(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    out.append((json.loads(r.value), dict(r.headers or [])))
        return out
    finally:
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


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
