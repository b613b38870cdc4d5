"""Putting events on Kafka exactly once after dedupe: claim, publish with acks=all, confirm.

Used by the webhook and by recovery alike, so a recovered event and a delivered one are recognised as
the same event whichever comes first (the resource version is each event's alias in the dedupe store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from redis.exceptions import RedisError

from ehrflow_contracts import NotificationQuarantined, NotificationReceived, SubscriptionSignal, topics
from ehrflow_ingest.dedupe import Claims, Dedupe
from ehrflow_ingest.metrics import DEDUPE_SKIPPED, DUPLICATES, published
from ehrflow_ingest.sink import Sink

log = logging.getLogger("ehrflow.ingest")


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time: nothing may be answered 2xx."""


class InFlight(Exception):
    """Another request is publishing one of these events right now: the sender should retry shortly."""


@dataclass(frozen=True)
class Recorded:
    published: tuple[NotificationReceived, ...]
    duplicates: int
    first_seen: frozenset[str]
    """Keys never seen before: the published ones, and those known only under their alias (recovered)."""


def partition_key(event: NotificationReceived) -> bytes:
    """One patient's events stay in order: organization + patient (or the focus when no patient is known)."""
    return f"{event.organization_id}|{event.patient or (event.focus and event.focus.original) or ''}".encode()


class Recorder:
    def __init__(self, sink: Sink, dedupe: Dedupe | None, publish_timeout_s: float) -> None:
        self._sink = sink
        self._dedupe = dedupe
        self._timeout = publish_timeout_s

    async def flush(self) -> None:
        """Write the dedupe confirmations still waiting (at shutdown)."""
        if self._dedupe is not None:
            await self._dedupe.flush()

    async def publish(self, records: Sequence[tuple[str, BaseModel, bytes]]) -> None:
        """Hand every (topic, record, key) to the broker, then wait until it acknowledged them all
        (acks=all), within the publish timeout; raise BrokerUnavailable otherwise."""
        try:
            async with asyncio.timeout(self._timeout):
                acks = [await self._sink.send(topic, record, key) for topic, record, key in records]
                for ack in acks:  # already in flight together: waiting in order costs nothing extra
                    await ack
        except Exception as exc:  # timeout, connection or Kafka error: the sender must retry
            raise BrokerUnavailable(type(exc).__name__) from exc

    async def events(
        self, org_id: str, events: Sequence[NotificationReceived], aliases: dict[str, str], *, kind: str = "event"
    ) -> Recorded:
        """Publish the events not seen before; raise InFlight or BrokerUnavailable (nothing confirmed)."""
        claims = await self._claim(org_id, [e.dedupe_key for e in events], aliases)
        claimed = claims.new + claims.seen_as_alias  # every key this request holds pending now
        if claims.in_flight:
            await self._release(claimed)
            raise InFlight
        if claims.duplicates:
            DUPLICATES.labels(org_id).inc(len(claims.duplicates))
        new = set(claims.new)
        fresh = tuple(e for e in events if e.dedupe_key in new)
        try:
            await self.publish([(topics.NOTIFICATION_RECEIVED, e, partition_key(e)) for e in fresh])
        except BrokerUnavailable:
            await self._release(claimed)
            raise
        if self._dedupe is not None:  # in the background: the answer does not wait for it (dedupe.Dedupe)
            self._dedupe.settle(claimed + [aliases[k] for k in claims.new if k in aliases])
        published(org_id, kind).inc(len(fresh))
        return Recorded(fresh, len(claims.duplicates), frozenset(claimed))

    async def signal(self, signal: SubscriptionSignal) -> None:
        key = f"{signal.organization_id}|{signal.subscription}".encode()
        await self.publish([(topics.SUBSCRIPTION_SIGNAL, signal, key)])
        published(signal.organization_id, signal.notification_type).inc()

    async def quarantine(self, record: NotificationQuarantined) -> None:
        await self.publish([(topics.NOTIFICATION_QUARANTINED, record, record.organization_id.encode())])

    async def _claim(self, org_id: str, keys: list[str], aliases: dict[str, str]) -> Claims:
        """Dedupe claims; without Redis every event is new (Kafka is the record, consumers are idempotent)."""
        if self._dedupe is None or not keys:
            return Claims(new=keys)
        try:
            return await self._dedupe.claim(keys, aliases)
        except RedisError:
            DEDUPE_SKIPPED.labels(org_id).inc(len(keys))
            log.warning("dedupe unavailable; publishing without it", extra={"org": org_id, "events": len(keys)})
            return Claims(new=keys)

    async def _release(self, keys: list[str]) -> None:
        if self._dedupe is not None and keys:
            with contextlib.suppress(RedisError):
                await self._dedupe.release(keys)
