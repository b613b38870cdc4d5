"""Ingest's background loop: keep declared subscriptions active, recover gaps and pings, notice silences.

Every ``tick_s`` it reads every tracking record and acts on what is due (``tracking.due``). Work on one
subscription, and the manager's pass over one organization, hold a Redis lock, so any number of
replicas can run the loop. Recovery's FHIR requests (each ``$events`` call, each search page, each read of a
subscription's criteria) are limited per organization and minute (``recovery_per_minute``): an over-eager
or hostile sender cannot turn ingest into a load generator against its EHR. Work over the budget waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from ehrflow_ingest.manager import SubscriptionManager
from ehrflow_ingest.metrics import RECOVERIES, SILENT
from ehrflow_ingest.recording import BrokerUnavailable, InFlight
from ehrflow_ingest.recovery import CannotRecover, Recovered, Recovery
from ehrflow_ingest.tracking import Due, Gap, SubscriptionState, due
from ehrflow_ingest.tracking_store import TrackingStore
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization, Registry

log = logging.getLogger("ehrflow.ingest.worker")

LOCK_PREFIX = "ehrflow:ingest:lock:"
RATE_PREFIX = "ehrflow:ingest:recovery-rate:"
LOCK_S = 120
RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.max(0, math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used))
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], 120)
end
return granted
"""


class Worker:
    def __init__(
        self,
        registry: Callable[[], Registry],
        redis: Redis,
        store: TrackingStore,
        recovery: Recovery | None,
        manager: SubscriptionManager | None,
        *,
        tick_s: float,
        manage_every_s: float,
        grace_s: float,
        clock: Callable[[], float] = time.time,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._registry = registry
        """The current registry (it follows reloads)."""
        self._redis = redis
        self._store = store
        self._recovery = recovery
        self._manager = manager
        self._tick = tick_s
        self._manage_every = manage_every_s
        self._grace = grace_s
        self._clock = clock
        self._managed_at = float("-inf")
        self._ready = ready
        """Whether the broker answers: while it does not, nothing recovered could be published and a
        subscription re-activated would fail again, so the pass waits (the EHR keeps its events)."""

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except (RedisError, UpstreamUnavailable) as exc:
                log.warning("background pass incomplete", extra={"reason": type(exc).__name__})
            except Exception:
                log.exception("background pass failed")
            await asyncio.sleep(self._tick)

    async def tick(self) -> None:
        if self._ready is not None and not await self._ready():
            log.warning("the broker does not answer; recovery and subscription management wait")
            return
        now = self._clock()
        if self._manager is not None and now - self._managed_at >= self._manage_every:
            self._managed_at = now
            for org in self._registry():
                if org.ingest.subscriptions:
                    await self._locked(f"manage:{org.id}", self._manage, org)
        for state in await self._store.tracked():
            org = self._registry().get(state.organization)
            if org is not None:
                await self._check(org, state, now)

    async def _manage(self, org: Organization) -> None:
        assert self._manager is not None
        try:
            await self._manager.reconcile(org)
        except (UpstreamRejected, UpstreamUnavailable) as exc:
            log.warning("could not check subscriptions on the EHR", extra={"org": org.id, "reason": str(exc)})

    async def _check(self, org: Organization, state: SubscriptionState, now: float) -> None:
        declared = next((s for s in org.ingest.subscriptions if s.name == state.name), None)
        todo = due(state, now, grace_s=self._grace, heartbeat_s=declared.heartbeat_s if declared else None)
        label = state.name or "undeclared"
        if todo.fell_silent:
            await self._store.update(org.id, state.key, _mark_silent)
            log.error("subscription silent for 1.5 heartbeat periods", extra={"org": org.id, "subscription": state.key})
        if declared is not None and declared.heartbeat_s:
            SILENT.labels(org.id, label).set(1 if (state.silent or todo.fell_silent) else 0)
        if todo.anything and self._recovery is not None:  # without it, the alerts above are all there is
            await self._locked(f"recover:{org.id}|{state.key}", self._recover, org, state, todo)

    async def _recover(self, org: Organization, state: SubscriptionState, todo: Due) -> None:
        assert self._recovery is not None
        wanted = (self._recovery.most_requests(len(todo.gaps)) if todo.gaps else 0) + (
            self._recovery.most_requests(0) if todo.sweep_since is not None else 0
        )
        rate_key = f"{RATE_PREFIX}{org.id}:{int(self._clock() // 60)}"
        budget = await self._reserve(org, rate_key, wanted)
        if budget <= 0:
            RECOVERIES.labels(org.id, "any", "rate-limited").inc()
            return
        started = self._clock()
        try:
            if todo.gaps:
                found = await self._recovery.gaps(org, state, todo.gaps, budget=budget)
                budget -= found.requests
                await self._store.update(org.id, state.key, _closed(found.gaps, found))
            if todo.sweep_since is not None and budget > 0:
                found = await self._recovery.search(org, state, todo.sweep_since, budget=budget)
                budget -= found.requests
                await self._store.update(org.id, state.key, _swept(started, found))
        except CannotRecover as exc:
            log.error("cannot recover: %s", exc, extra={"org": org.id})
            await self._store.update(org.id, state.key, _give_up(todo.gaps))
        except InFlight:  # an earlier pass's publish is still on its way: not again meanwhile
            RECOVERIES.labels(org.id, "any", "in-flight").inc()
        except (UpstreamRejected, UpstreamUnavailable, BrokerUnavailable) as exc:
            RECOVERIES.labels(org.id, "any", "failed").inc()
            log.warning("recovery failed; will retry", extra={"org": org.id, "reason": str(exc) or type(exc).__name__})
        finally:
            if budget > 0:  # what was reserved and not spent goes back to this minute's budget
                with contextlib.suppress(RedisError):
                    await self._redis.decrby(rate_key, budget)

    async def _reserve(self, org: Organization, rate_key: str, wanted: int) -> int:
        """Take up to ``wanted`` FHIR requests from the organization's budget for this minute, atomically
        across replicas; returns how many were granted (0 when the minute's budget is spent)."""
        granted = await self._redis.eval(RESERVE, 1, rate_key, wanted, org.ingest.recovery_per_minute)
        return int(granted)

    async def _locked(self, name: str, action: Callable[..., Awaitable[None]], *args: object) -> None:
        lock = self._redis.lock(LOCK_PREFIX + name, timeout=LOCK_S, blocking=False)
        if not await lock.acquire():
            return  # another replica is on it
        try:
            await action(*args)
        finally:
            with contextlib.suppress(LockError):
                await lock.release()


def _mark_silent(state: SubscriptionState) -> None:
    state.silent = True


def _closed(gaps: tuple[Gap, ...], found: Recovered) -> Callable[[SubscriptionState], None]:
    recovered = {(g.first, g.last) for g in gaps}

    def change(state: SubscriptionState) -> None:
        state.gaps = [g for g in state.gaps if (g.first, g.last) not in recovered]
        if found.newest is not None:
            state.last_event_at = max(state.last_event_at or 0.0, found.newest)

    return change


def _swept(started: float, found: Recovered) -> Callable[[SubscriptionState], None]:
    def change(state: SubscriptionState) -> None:
        if found.newest is not None:
            state.last_event_at = max(state.last_event_at or 0.0, found.newest)
        if not found.complete and found.newest is not None:
            state.sweep_since = found.newest  # results are sorted by _lastUpdated: go on from the newest
        elif state.sweep_requested_at is None or state.sweep_requested_at <= started:
            state.sweep_since = state.sweep_requested_at = None  # nothing asked for a sweep meanwhile

    return change


def _give_up(gaps: tuple[Gap, ...]) -> Callable[[SubscriptionState], None]:
    """Nothing can be fetched for this subscription: keep the alert, drop the work so it is not retried forever."""
    dropped = {(g.first, g.last) for g in gaps}

    def change(state: SubscriptionState) -> None:
        state.gaps = [g for g in state.gaps if (g.first, g.last) not in dropped]
        state.sweep_since = state.sweep_requested_at = None

    return change
