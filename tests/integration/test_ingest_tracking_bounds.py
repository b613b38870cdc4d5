"""A sender cannot grow ingest's tracking state without bound (the stack's real Redis)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from ehrflow_devstack.stack import Stack
from ehrflow_ingest.tracking import SubscriptionState
from ehrflow_ingest.tracking_store import INDEX, MAX_UNDECLARED, PREFIX, TrackingFull, TrackingStore

pytestmark = pytest.mark.integration


def _touch(state: SubscriptionState) -> None:
    state.status = "active"


async def test_subscriptions_a_sender_names_are_tracked_up_to_a_bound_declared_ones_always(stack: Stack) -> None:
    """Every notification naming a new ``Subscription/id`` created a 30-day record the worker reads on
    every tick: any authenticated sender could grow that set without end."""
    assert stack.redis
    redis = Redis.from_url(stack.redis.url)
    store = TrackingStore(redis)
    org = f"bounds-{uuid.uuid4().hex[:8]}"  # in no registry: the stack's worker passes these by
    try:
        for n in range(MAX_UNDECLARED):
            await store.update(org, f"ref:Subscription/s{n}", _touch)
        with pytest.raises(TrackingFull):
            await store.update(org, "ref:Subscription/one-too-many", _touch)
        await store.update(org, "ref:Subscription/s0", _touch)  # those tracked already go on
        await store.update(org, "route:vitals", _touch)  # declared subscriptions are always tracked
        ours = [s for s in await store.tracked() if s.organization == org]
        assert len(ours) == MAX_UNDECLARED + 1
        await redis.delete(f"{PREFIX}{org}|ref:Subscription/s1")  # one expires: its place is free again
        await store.tracked()
        await store.update(org, "ref:Subscription/newcomer", _touch)
    finally:
        keys = [k async for k in redis.scan_iter(f"{PREFIX}{org}|*")]
        if keys:
            await redis.delete(*keys)
            await redis.srem(INDEX, *keys)
        await redis.delete(f"{INDEX}:undeclared:{org}")
        await redis.aclose()
