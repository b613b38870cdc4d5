"""Dedupe of notification events, in Redis, for at least seven days (subscriptions.md items 9, 22).

A key is claimed *pending* (briefly) before its event is published and marked *done* only after the
broker confirmed it; a failed publish releases the claim. So a crash between claim and publish costs a
retry, never an event: the pending claim expires and the sender's retry publishes. A key found *done*
is a duplicate (200, nothing published); one found *pending* is being published right now (503: retry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

PREFIX = "ehrflow:ingest:seen:"
RETENTION_S = 8 * 24 * 3600
"""Longer than the seven days athenahealth replays its dead-letter queue for."""
PENDING_MS = 30_000


@dataclass
class Claims:
    new: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)


class Dedupe:
    def __init__(self, redis: Redis, *, retention_s: int = RETENTION_S, pending_ms: int = PENDING_MS) -> None:
        self._redis = redis
        self._retention = retention_s
        self._pending = pending_ms

    async def claim(self, keys: list[str]) -> Claims:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(PREFIX + key, "pending", nx=True, px=self._pending)
            for key in keys:
                pipe.get(PREFIX + key)
            results = await pipe.execute()
        claims = Claims()
        for key, acquired, state in zip(keys, results[: len(keys)], results[len(keys) :], strict=True):
            if acquired:
                claims.new.append(key)
            elif state == b"done":
                claims.duplicates.append(key)
            else:
                claims.in_flight.append(key)
        return claims

    async def confirm(self, keys: list[str]) -> None:
        if keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(PREFIX + key, "done", ex=self._retention)
                await pipe.execute()

    async def release(self, keys: list[str]) -> None:
        if keys:
            await self._redis.delete(*[PREFIX + key for key in keys])
