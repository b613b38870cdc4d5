"""Recovery's request budget on a real Redis: reserved atomically across replicas, never over the limit."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from ehrflow_devstack.stack import Stack
from ehrflow_ingest.worker import RESERVE

pytestmark = pytest.mark.integration


async def test_concurrent_reservations_never_grant_more_than_the_minutes_budget(stack: Stack) -> None:
    assert stack.redis
    redis = Redis.from_url(stack.redis.url)
    key = f"ehrflow:test:recovery-rate:{uuid.uuid4().hex}"
    try:
        # Ten replicas each asking for 51 requests (one gap's $events, then a search's criteria and 50 pages).
        granted = await asyncio.gather(*[redis.eval(RESERVE, 1, key, 51, 60) for _ in range(10)])
        assert sum(int(g) for g in granted) == 60
        assert sorted(int(g) for g in granted)[-2:] == [9, 51]
        assert int(await redis.get(key)) == 60
        assert 0 < await redis.ttl(key) <= 120
        await redis.decrby(key, 40)  # one replica spent 11 of its 51 and gives the rest back
        assert int(await redis.eval(RESERVE, 1, key, 51, 60)) == 40
    finally:
        await redis.delete(key)
        await redis.aclose()
