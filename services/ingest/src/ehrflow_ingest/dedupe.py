"""Dedupe of notification events, in Redis, for at least seven days (docs/design/notifications.md items 9, 22).

A key is claimed *pending* (briefly) before its event is published and marked *done* only after the
broker confirmed it; a failed publish releases the claim. So a crash between claim and publish costs a
retry, never an event: the pending claim expires and the sender's retry publishes. A key found *done*
is a duplicate (200, nothing published); one found *pending* is being published right now (503: retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

log = logging.getLogger("ehrflow.ingest.dedupe")

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


CALL = """
-- KEYS: m keys to confirm, then n event keys to claim, then one alias per event key ('' where it has
-- none). ARGV: pending TTL (ms), n, m, retention (s).
-- Confirms first, so a re-delivery claimed in the same call already finds its key done. Returns per
-- event key: 1 new, 2 duplicate, 3 in flight, 4 new but its alias is done (a duplicate under another name).
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, m do redis.call('SET', KEYS[i], 'done', 'EX', ARGV[4]) end
local result = {}
for i = 1, n do
  local key = KEYS[m + i]
  if redis.call('SET', key, 'pending', 'NX', 'PX', ARGV[1]) then
    local alias = KEYS[m + n + i]
    if alias ~= '' and redis.call('GET', alias) == 'done' then result[i] = 4 else result[i] = 1 end
  elseif redis.call('GET', key) == 'done' then result[i] = 2
  else result[i] = 3 end
end
return result
"""

Pending = tuple[list[str], list[str], "asyncio.Future[list[int]]"]


class Dedupe:
    """One script call at a time carries everything waiting: the claims of concurrent requests and the
    confirmations of those already published. While a call is on its way, what arrives gathers into the
    next (one round trip and one command for many requests under load; an immediate call when quiet).
    The script runs confirmations first and claims in arrival order, so two deliveries of one event in
    the same call still resolve as new and in-flight, and a re-delivery after a confirmation as a duplicate.

    Confirmations are written in the background (``settle``): an answer never waits for them. Until one
    is written a re-delivery finds its claim pending (503, retry); if it is never written (Redis down, a
    crash) the claim expires and a re-delivery is published again, a duplicate for idempotent consumers,
    never a loss.

    Since calls go one at a time, they go over a connection of their own, made from the client's pool
    settings (TLS, Unix socket, timeouts) but not borrowed from it: redis-py's way through the pool
    (acquire, retry wrapper, observability hooks, release) cost ~65 µs of CPU per call, half of the call,
    and at moderate load every notification makes one or two calls (docs/benchmarks.md). ``aclose()``
    closes it."""

    def __init__(self, redis: Redis, *, retention_s: int = RETENTION_S, pending_ms: int = PENDING_MS) -> None:
        self._redis = redis
        self._retention = retention_s
        self._pending = pending_ms
        self._script = redis.register_script(CALL)
        # The sender's own connection, made as the pool makes its (redis-py leaves this method untyped).
        self._connection: AbstractConnection = redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._claims: list[Pending] = []
        self._confirmations: list[str] = []
        self._sender: asyncio.Task[None] | None = None

    async def claim(self, keys: list[str], aliases: Mapping[str, str] | None = None) -> Claims:
        """Claim each key. ``aliases`` maps a key to a second name of the same event (its resource
        version): a new key whose alias is done is a duplicate too, e.g. a late delivery of what recovery
        published. Raises RedisError when Redis does not answer."""
        aliases = aliases or {}
        answer: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._claims.append(
            ([PREFIX + k for k in keys], [PREFIX + aliases[k] if k in aliases else "" for k in keys], answer)
        )
        self._wake()
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

    def settle(self, keys: list[str]) -> None:
        """Mark the keys done (kept for the retention), with the next call; returns at once."""
        if keys:
            self._confirmations.extend(PREFIX + k for k in keys)
            self._wake()

    async def flush(self) -> None:
        """Wait until everything handed over so far is written or has failed (at shutdown, and in tests)."""
        while self._sender is not None:
            await asyncio.shield(self._sender)

    async def aclose(self) -> None:
        """Close the sender's connection (after ``flush``, at shutdown)."""
        await self._connection.disconnect()

    async def extend(self, keys: list[str]) -> None:
        """Keep pending claims pending for another ``pending_ms`` (their publish is still on its way)."""
        if keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pexpire(PREFIX + key, self._pending)
                await pipe.execute()

    async def release(self, keys: list[str]) -> None:
        if keys:
            await self._redis.delete(*[PREFIX + key for key in keys])

    def _wake(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._claims or self._confirmations:
                claims, self._claims = self._claims, []
                confirmations, self._confirmations = self._confirmations, []
                names = [n for keys, _, _ in claims for n in keys]
                aliases = [a for _, alias_names, _ in claims for a in alias_names]
                args = [self._pending, len(names), len(confirmations), self._retention]
                try:
                    states = await self._call(confirmations + names + aliases, args)
                except Exception as exc:  # each waiting request gets the failure (RedisError: no dedupe)
                    if confirmations:
                        log.warning(
                            "dedupe confirmations not written; their claims expire", extra={"keys": len(confirmations)}
                        )
                    for _, _, answer in claims:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                start = 0
                for keys, _, answer in claims:
                    if not answer.done():  # a request that gave up leaves its claims to expire
                        answer.set_result(list(states[start : start + len(keys)]))
                    start += len(keys)
        finally:
            self._sender = None

    async def _call(self, keys: list[str], args: list[int]) -> list[int]:
        """The script, by its digest, on the sender's connection. Once more after loading it if Redis lost
        it (a restart, SCRIPT FLUSH), or over a new connection if the old one had dropped (a claim that
        did run the first time then finds itself in flight: 503, retry). A reply that does not come
        within the socket timeout fails the call; redis-py then disconnects, so no late reply is misread."""
        command = self._connection.pack_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
        try:
            return await self._round_trip(command)
        except NoScriptError:
            await self._redis.script_load(CALL)
        except RedisConnectionError:
            pass
        return await self._round_trip(command)

    async def _round_trip(self, command: list[bytes]) -> list[int]:
        await self._connection.send_packed_command(command, check_health=False)
        states: list[int] = await self._connection.read_response()
        return states
