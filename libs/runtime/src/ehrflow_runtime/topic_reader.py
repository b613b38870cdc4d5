"""Reading a whole topic from its beginning, outside any consumer group (nothing is committed): what the
dead-letter tools list and replay, and what writeback rebuilds its review view from."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ehrflow_runtime.broker import client_options
from ehrflow_runtime.settings import KafkaSettings


async def read_topic(kafka: KafkaSettings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` now, in order within each partition (partitions one after another)."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=kafka.max_message_bytes,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - the topic may not be cached yet
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        # The end offsets say when to stop reading, never which records to keep: Tansu 0.6 (the local
        # broker) answers ListOffsets(latest) with the last *batch's* base offset + 1, so a filter on them
        # would drop the tail of the last batch. Whole fetched batches are kept; a record appended while
        # we read is on the log too, and every reader here is idempotent.
        ends = await consumer.end_offsets(partitions)
        found: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {tp: [] for tp in partitions}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                found[tp] += records
        return [r for tp in partitions for r in found[tp]]
    finally:
        await consumer.stop()
