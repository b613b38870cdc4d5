"""Dedupe of notification events, in Redis, for at least seven days (subscriptions.md items 9, 22).

A key is claimed *pending* (briefly) before its event is published and marked *done* only after the
broker confirmed it; a failed publish releases the claim. So a crash between claim and publish costs a
retry, never an event: the pending claim expires and the sender's retry publishes. A key found *done*
is a duplicate (200, nothing published); one found *pending* is being published right now (503: retry).
"""

from __future__ import annotations

import asyncio
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


CLAIM = """
-- KEYS: n event keys, then one alias per event key ('' where it has none). ARGV: pending TTL (ms), n.
-- Returns per event key: 1 new, 2 duplicate, 3 in flight, 4 new but its alias is done (a duplicate
-- under another name).
local n = tonumber(ARGV[2])
local result = {}
for i = 1, n do
  if redis.call('SET', KEYS[i], 'pending', 'NX', 'PX', ARGV[1]) then
    local alias = KEYS[n + i]
    if alias ~= '' and redis.call('GET', alias) == 'done' then result[i] = 4 else result[i] = 1 end
  elseif redis.call('GET', KEYS[i]) == 'done' then result[i] = 2
  else result[i] = 3 end
end
return result
"""


CONFIRM = """
for _, key in ipairs(KEYS) do redis.call('SET', key, 'done', 'EX', ARGV[1]) end
return #KEYS
"""

Pending = tuple[list[str], list[str], "asyncio.Future[list[int]]"]


class Dedupe:
    """Claims from concurrent requests travel together: while one script call is on its way, the claims
    that arrive gather into the next (one round trip and one command for many requests under load, an
    immediate call when quiet). The script runs claims in arrival order, so two deliveries of one event
    in the same call still resolve as new and in-flight."""

    def __init__(self, redis: Redis, *, retention_s: int = RETENTION_S, pending_ms: int = PENDING_MS) -> None:
        self._redis = redis
        self._retention = retention_s
        self._pending = pending_ms
        self._claim_script = redis.register_script(CLAIM)
        self._confirm_script = redis.register_script(CONFIRM)
        self._waiting: list[Pending] = []
        self._sender: asyncio.Task[None] | None = None

    async def claim(self, keys: list[str], aliases: Mapping[str, str] | None = None) -> Claims:
        """Claim each key. ``aliases`` maps a key to a second name of the same event (its resource
        version): a new key whose alias is done is a duplicate too, e.g. a late delivery of what recovery
        published. Raises RedisError when Redis does not answer."""
        aliases = aliases or {}
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[int]] = loop.create_future()
        self._waiting.append(
            ([PREFIX + k for k in keys], [PREFIX + aliases[k] if k in aliases else "" for k in keys], answer)
        )
        if self._sender is None:
            self._sender = loop.create_task(self._send_claims())
        states = await answer
        claims = Claims()
        for key, state in zip(keys, states, strict=True):
            if state == 1:
                claims.new.append(key)
            elif state == 4:
                claims.duplicates.append(key)
                claims.seen_as_alias.append(key)
            elif state == 2:
                claims.duplicates.append(key)
            else:
                claims.in_flight.append(key)
        return claims

    async def _send_claims(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                names = [n for keys, _, _ in batch for n in keys]
                aliases = [a for _, alias_names, _ in batch for a in alias_names]
                try:
                    states = await self._claim_script(keys=names + aliases, args=[self._pending, len(names)])
                except Exception as exc:  # each waiting request gets the failure (RedisError: no dedupe)
                    for _, _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                start = 0
                for keys, _, answer in batch:
                    if not answer.done():  # a request that gave up leaves its claims to expire
                        answer.set_result(list(states[start : start + len(keys)]))
                    start += len(keys)
        finally:
            self._sender = None

    async def confirm(self, keys: list[str]) -> None:
        if keys:
            await self._confirm_script(keys=[PREFIX + k for k in keys], args=[self._retention])

    async def release(self, keys: list[str]) -> None:
        if keys:
            await self._redis.delete(*[PREFIX + key for key in keys])
