"""Dedupe of notification events, in Redis, for at least seven days (subscriptions.md items 9, 22).

A key is claimed *pending* (briefly) before its event is published and marked *done* only after the
broker confirmed it; a failed publish releases the claim. So a crash between claim and publish costs a
retry, never an event: the pending claim expires and the sender's retry publishes. A key found *done*
is a duplicate (200, nothing published); one found *pending* is being published right now (503: retry).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    seen_as_alias: list[str] = field(default_factory=list)
    """Duplicates under their alias: their own key is claimed and must be confirmed too."""


class Dedupe:
    def __init__(self, redis: Redis, *, retention_s: int = RETENTION_S, pending_ms: int = PENDING_MS) -> None:
        self._redis = redis
        self._retention = retention_s
        self._pending = pending_ms

    async def claim(self, keys: list[str], aliases: Mapping[str, str] | None = None) -> Claims:
        """Claim each key. ``aliases`` maps a key to a second name of the same event (its resource version):
        a new key whose alias is done is a duplicate too, e.g. a late delivery of what recovery published."""
        aliases = aliases or {}
        aliased = [k for k in keys if k in aliases]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(PREFIX + key, "pending", nx=True, px=self._pending)
            for key in keys:
                pipe.get(PREFIX + key)
            for key in aliased:
                pipe.get(PREFIX + aliases[key])
            results = await pipe.execute()
        n = len(keys)
        alias_done = {k for k, state in zip(aliased, results[2 * n :], strict=True) if state == b"done"}
        claims = Claims()
        for key, acquired, state in zip(keys, results[:n], results[n : 2 * n], strict=True):
            if acquired and key in alias_done:
                claims.duplicates.append(key)
                claims.seen_as_alias.append(key)
            elif acquired:
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
