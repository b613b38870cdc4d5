"""The whole-topic reader (dead-letter listing and replay, the review view's rebuild, the tests' own reads)
on a real broker: every record comes back, including all of the last batch. Tansu answers ListOffsets
(latest) with the last batch's base offset + 1, so a reader that trusted those offsets per record would
return one record of a 25-record batch."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaProducer

from ehrflow_devstack.parts import Part
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.topic_reader import read_topic

pytestmark = pytest.mark.integration


async def _produce_in_batches(url: str, topic: str, batches: list[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=50, enable_idempotence=False)
    await producer.start()
    try:
        n = 0
        for size in batches:
            sent = [await producer.send(topic, json.dumps({"n": n + i}).encode(), partition=0) for i in range(size)]
            await asyncio.gather(*sent)
            n += size
    finally:
        await producer.stop()


async def test_every_record_of_every_batch_is_read_in_order(private_broker: Part) -> None:
    await _produce_in_batches(private_broker.url, "reader-probe", [25, 3, 40])
    records = await read_topic(KafkaSettings(bootstrap_servers=private_broker.url), "reader-probe")
    assert [json.loads(r.value or b"")["n"] for r in records] == list(range(68))


async def test_a_topic_that_does_not_exist_reads_as_empty(private_broker: Part) -> None:
    assert await read_topic(KafkaSettings(bootstrap_servers=private_broker.url), "no-such-topic") == []
