"""Putting events on Kafka exactly once after dedupe: claim, publish with acks=all, confirm.

Used by the webhook and by recovery alike, so a recovered event and a delivered one are recognised as
the same event whichever comes first (the resource version is each event's alias in the dedupe store).

A publish that is not acknowledged in time is not a publish that failed: its records are with the
producer, or already in the broker's socket, and are written when the broker answers again. So its
claims are kept (refreshed while the outcome is open) and every re-delivery or recovery of those events
meanwhile gets "in flight" instead of adding a copy. When the acknowledgement comes, the claims are
confirmed; when the producer gives up, they are released only once the broker answers again (the
records may have been written anyway), so however long the outage, an event reaches Kafka at most twice.
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


REFRESH_S = 10.0
"""How often claims whose publish is still on its way are kept pending (the claims live 30 s)."""
RECHECK_S = 2.0
"""How often, after the producer gave up, the broker is asked whether it answers again."""


class Recorder:
    def __init__(self, sink: Sink, dedupe: Dedupe | None, publish_timeout_s: float) -> None:
        self._sink = sink
        self._dedupe = dedupe
        self._timeout = publish_timeout_s
        self._outstanding: set[asyncio.Task[None]] = set()

    async def flush(self, wait_s: float = 5.0) -> None:
        """At shutdown: give outstanding publishes ``wait_s`` to settle, then write the dedupe
        confirmations still waiting."""
        if self._outstanding:
            await asyncio.wait(set(self._outstanding), timeout=wait_s)
            for task in self._outstanding:
                task.cancel()
        if self._dedupe is not None:
            await self._dedupe.flush()

    async def publish(self, records: Sequence[tuple[str, BaseModel, bytes]]) -> None:
        """Hand every (topic, record, key) to the broker, then wait until it acknowledged them all
        (acks=all), within the publish timeout; raise BrokerUnavailable otherwise."""
        _, outcome = await self._hand_over(records)
        if outcome is not None:
            raise BrokerUnavailable(outcome)

    async def _hand_over(
        self, records: Sequence[tuple[str, BaseModel, bytes]]
    ) -> tuple[list[asyncio.Future[object]], str | None]:
        """Hand the records to the producer and wait, within the publish timeout, for their
        acknowledgements. Returns the acknowledgements of the records handed over, and None when all
        came, else why not (the acknowledgements still open are still coming, or failing)."""
        acks: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self._timeout):
                for topic, record, key in records:
                    acks.append(asyncio.ensure_future(await self._sink.send(topic, record, key)))
                for ack in acks:  # already in flight together: waiting in order costs nothing extra
                    await asyncio.shield(ack)
        except Exception as exc:  # timeout, connection or Kafka error: the sender must retry
            return acks, type(exc).__name__
        return acks, None

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
        confirm = claimed + [aliases[k] for k in claims.new if k in aliases]
        acks, failed = await self._hand_over([(topics.NOTIFICATION_RECEIVED, e, partition_key(e)) for e in fresh])
        if failed is not None:
            handed = {e.dedupe_key for e in fresh[: len(acks)]}
            never_sent = [k for k in claimed if k in new and k not in handed]
            await self._release(never_sent)  # not with the producer: a retry may publish them
            kept = [k for k in claimed if k not in never_sent]
            if acks and self._dedupe is not None:
                self._await_outcome(org_id, kind, acks, kept, [k for k in confirm if k not in never_sent])
            else:
                await self._release(kept)
            raise BrokerUnavailable(failed)
        if self._dedupe is not None:  # in the background: the answer does not wait for it (dedupe.Dedupe)
            self._dedupe.settle(confirm)
        published(org_id, kind).inc(len(fresh))
        return Recorded(fresh, len(claims.duplicates), frozenset(claimed))

    def _await_outcome(
        self, org_id: str, kind: str, acks: list[asyncio.Future[object]], held: list[str], confirm: list[str]
    ) -> None:
        """In the background: keep ``held`` claims pending until the acknowledgements are in; confirm on
        success, release once the broker answers again on failure."""
        task = asyncio.get_running_loop().create_task(self._settle_late(org_id, kind, acks, held, confirm))
        self._outstanding.add(task)
        task.add_done_callback(self._outstanding.discard)

    async def _settle_late(
        self, org_id: str, kind: str, acks: list[asyncio.Future[object]], held: list[str], confirm: list[str]
    ) -> None:
        assert self._dedupe is not None
        refresh = asyncio.get_running_loop().create_task(self._keep_pending(held))
        try:
            results = await asyncio.gather(*acks, return_exceptions=True)
            if not any(isinstance(r, BaseException) for r in results):
                self._dedupe.settle(confirm)
                published(org_id, kind).inc(len(acks))
                log.info("a late publish was acknowledged", extra={"org": org_id, "events": len(acks)})
                return
            while not await self._sink.ready():  # the records may have been written: wait to know less badly
                await asyncio.sleep(RECHECK_S)
            log.warning("a late publish failed; its events may be published again", extra={"org": org_id})
        finally:
            refresh.cancel()
        await self._release(held)

    async def _keep_pending(self, keys: list[str]) -> None:
        assert self._dedupe is not None
        while True:
            await asyncio.sleep(REFRESH_S)
            with contextlib.suppress(RedisError):
                await self._dedupe.extend(keys)

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
