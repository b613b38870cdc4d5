"""Subscription tracking records in Redis, shared by every ingest replica.

Each record is changed with an optimistic transaction (WATCH/MULTI): two replicas receiving
notifications of one subscription at once both land, the logic stays in ``tracking`` as plain Python.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from ehrflow_ingest.tracking import SubscriptionState

PREFIX = "ehrflow:ingest:subscription:"
INDEX = "ehrflow:ingest:subscriptions"
RETENTION_S = 30 * 24 * 3600
"""A record nobody updated for this long is forgotten (a deleted subscription)."""
ATTEMPTS = 50
MAX_UNDECLARED = 100
"""Subscriptions a sender may name (``ref:Subscription/id``, not declared in the registry) that are
tracked per organization. Each is a record the worker reads on every tick, and any authenticated sender
can name a new one with every notification: beyond this, new names are not tracked (declared
subscriptions always are)."""

T = TypeVar("T")


class TrackingContention(Exception):
    """Other replicas kept changing the record; this update was given up."""


class TrackingFull(Exception):
    """The organization already tracks ``MAX_UNDECLARED`` subscriptions its senders named."""


def tracking_key(name: str | None, subscription: str | None) -> str | None:
    """A declared subscription is known by its route name; another by the sender's ``Subscription/id``.
    A classic delivery to the organization's shared route has neither and is not tracked."""
    if name:
        return f"route:{name}"
    if subscription:
        return f"ref:{subscription}"
    return None


class TrackingStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._local: dict[str, asyncio.Lock] = {}

    def _lock(self, redis_key: str) -> asyncio.Lock:
        return self._local.setdefault(redis_key, asyncio.Lock())

    @staticmethod
    def _key(org_id: str, key: str) -> str:
        return f"{PREFIX}{org_id}|{key}"

    @staticmethod
    def _undeclared(org_id: str) -> str:
        return f"{INDEX}:undeclared:{org_id}"

    async def update(self, org_id: str, key: str, change: Callable[[SubscriptionState], T]) -> T:
        """Apply ``change`` to the record (created when missing) atomically; retried on a concurrent write.
        Within a replica, updates of one record take turns (a busy subscription would otherwise make its
        concurrent notifications retry each other out); WATCH settles races between replicas."""
        redis_key = self._key(org_id, key)
        async with self._lock(redis_key):
            return await self._update(org_id, key, redis_key, change)

    async def _update(self, org_id: str, key: str, redis_key: str, change: Callable[[SubscriptionState], T]) -> T:
        undeclared = self._undeclared(org_id) if key.startswith("ref:") else None
        for _ in range(ATTEMPTS):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(redis_key, *([undeclared] if undeclared else []))
                    raw = await pipe.get(redis_key)
                    if not raw and undeclared and await pipe.scard(undeclared) >= MAX_UNDECLARED:
                        raise TrackingFull(f"{org_id} tracks {MAX_UNDECLARED} subscriptions its senders named")
                    state = (
                        SubscriptionState.model_validate_json(raw)
                        if raw
                        else SubscriptionState(organization=org_id, key=key)
                    )
                    result = change(state)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(redis_key, state.model_dump_json(), ex=RETENTION_S)
                    pipe.sadd(INDEX, redis_key)
                    if undeclared:
                        pipe.sadd(undeclared, redis_key)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise TrackingContention(f"tracking record {org_id}|{key} kept changing under us")

    async def load(self, org_id: str, key: str) -> SubscriptionState | None:
        raw = await self._redis.get(self._key(org_id, key))
        return SubscriptionState.model_validate_json(raw) if raw else None

    async def tracked(self) -> list[SubscriptionState]:
        """Every live record; index entries of expired ones are dropped."""
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await self._redis.smembers(INDEX))
        if not keys:
            return []
        values = await self._redis.mget(keys)
        gone = [k for k, v in zip(keys, values, strict=True) if v is None]
        if gone:
            await self._redis.srem(INDEX, *gone)
            for key in gone:  # an expired undeclared record frees its place
                org_id = key.removeprefix(PREFIX).split("|", 1)[0]
                await self._redis.srem(self._undeclared(org_id), key)
        return [SubscriptionState.model_validate_json(v) for v in values if v is not None]
