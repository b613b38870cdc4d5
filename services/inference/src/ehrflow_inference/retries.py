"""Retries that do not block: an event whose model call or EHR read failed for now leaves its partition for a
delayed retry topic, and after the last tier goes to the dead-letter topic.

The tiers are three topics (``topics.INFERENCE_RETRIES``), each with its delay (``EHRFLOW_RETRY__DELAYS_S``,
default 5, 30 and 120 s; ``ehrflow_runtime.retry_tiers``). A record there is the event itself, with its attempt and the instant it is due in
headers; the tier's consumer waits until then (its records are due in the order they were written, as every
record of a tier waits the same delay) and tries again. The notification partition never waits for a retry.

One patient's events stay in order. Events of one organization and patient share a key, so a partition
hands them over in order; what could reorder them is a retry. So while an event of a key is in the retry
tiers, the key is *parked*: a FIFO of event ids in Redis (``Parking``). A later event of a parked key is not
evaluated: it joins the FIFO and goes to the first tier, and an event is evaluated only at the head of its
FIFO (one that is not yet at the head goes round its tier again, which is not an attempt). The head leaves
when it is drafted, or dead-lettered after its last attempt. A crash between steps repeats a step, never
skips one: joining is idempotent, and drafts are keyed by their inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from faststream.kafka.publisher import DefaultPublisher
from prometheus_client import Counter
from redis.asyncio import Redis

from ehrflow_contracts import NotificationReceived, topics
from ehrflow_runtime.dead_letters import after_retries
from ehrflow_runtime.retry_tiers import RetryPolicy, headers

RETRIES = Counter("ehrflow_inference_retries", "Events sent to a retry tier, by tier and why.", ["tier", "why"])


def key_of(event: NotificationReceived) -> str:
    """The partition key of an event, and of its parking FIFO: organization and patient."""
    return f"{event.organization_id}|{event.patient or ''}"


_JOIN = """
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then redis.call('RPUSH', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('LLEN', KEYS[1])
"""


class Parking:
    """Per key, the FIFO of event ids in the retry tiers (Redis lists, expiring a day after their last use)."""

    def __init__(self, redis: Redis, *, prefix: str = "ehrflow:inference:parked:", ttl_s: int = 86_400) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._join = redis.register_script(_JOIN)

    async def occupied(self, key: str) -> bool:
        return bool(await self._redis.llen(self._prefix + key))

    async def join(self, key: str, event_id: str) -> None:
        await self._join(keys=[self._prefix + key], args=[event_id, self._ttl_s])

    async def first(self, key: str) -> str | None:
        head = await self._redis.lindex(self._prefix + key, 0)
        return head.decode() if isinstance(head, bytes) else head

    async def leave(self, key: str, event_id: str) -> None:
        await self._redis.lrem(self._prefix + key, 0, event_id)


@dataclass
class Retrying:
    """Sends events to the retry tiers and, after the last, to the dead-letter topic."""

    policy: RetryPolicy
    tiers: tuple[DefaultPublisher, ...]
    dead: DefaultPublisher
    parking: Parking

    async def later(self, event: NotificationReceived, *, tier: int, attempt: int, why: str) -> None:
        """Park the event's key and send the event to ``tier`` (1-based), due after that tier's delay."""
        key = key_of(event)
        await self.parking.join(key, event.event_id)
        due = time.time() + self.policy.delays_s[tier - 1]
        await self.tiers[tier - 1].publish(event, key=key.encode(), headers=headers(attempt, due, why))
        RETRIES.labels(str(tier), "waiting" if attempt == 0 else "failed").inc()

    async def give_up(self, event: NotificationReceived, *, attempts: int, why: str, source: str) -> None:
        """Dead-letter the event (its record kept for replay), then unpark it so the key's next event goes on."""
        key = key_of(event)
        letter = after_retries(
            event, home=topics.NOTIFICATION_RECEIVED, key=key, attempts=attempts, why=why, source=source
        )
        await self.dead.publish(letter, key=key.encode())
        await self.parking.leave(key, event.event_id)
