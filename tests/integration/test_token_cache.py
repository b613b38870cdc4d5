"""The shared token cache on a real Redis: sealed values, single flight, 429 back-off, purge."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ehrflow_auth.cache import TokenCache
from ehrflow_auth.token_request import RateLimited
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture()
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    assert stack.redis
    client = Redis.from_url(stack.redis.url)
    yield client
    await client.aclose()


def _key(org: str = "orgx") -> str:
    return f"ehrflow:auth:token:{org}:{uuid.uuid4().hex}"


class Upstream:
    """Counts token requests; answers after a pause so concurrent callers overlap."""

    def __init__(self, *, expires_in: int = 300, fail: Exception | None = None) -> None:
        self.calls, self.expires_in, self.fail = 0, expires_in, fail

    async def __call__(self) -> tuple[str, str, int]:
        self.calls += 1
        await asyncio.sleep(0.2)
        if self.fail:
            raise self.fail
        return f"token-{self.calls}", "system/*.read", self.expires_in


async def test_values_are_sealed_and_bound_to_their_key(redis: Redis) -> None:
    cache = TokenCache(redis, os.urandom(32))
    mine, theirs = _key("org1"), _key("org2")
    await cache.put(mine, "the-access-token", "s", 300)
    raw = await redis.get(mine)
    assert raw is not None and b"the-access-token" not in raw
    await redis.set(theirs, raw, ex=300)  # moved under another organization's key
    assert await cache.get(theirs, 0) is None
    assert await TokenCache(redis, os.urandom(32)).get(mine, 0) is None  # another cache secret
    hit = await cache.get(mine, 0)
    assert hit is not None and hit.access_token == "the-access-token"


async def test_cold_stampede_makes_one_upstream_request(redis: Redis) -> None:
    cache, upstream, key = TokenCache(redis, os.urandom(32)), Upstream(), _key()
    results = await asyncio.gather(*[cache.get_or_fetch(key, 60, upstream) for _ in range(100)])
    assert upstream.calls == 1 and {r.access_token for r in results} == {"token-1"}


async def test_early_refresh(redis: Redis) -> None:
    cache, upstream, key = TokenCache(redis, os.urandom(32)), Upstream(), _key()
    await cache.put(key, "old", "s", 100)  # 100 s left: below 60 s minimum + 60 s margin
    assert (await cache.get_or_fetch(key, 60, upstream)).access_token == "token-1"


async def test_rate_limited_keeps_serving_a_valid_token_and_backs_off(redis: Redis) -> None:
    secret = os.urandom(32)
    cache, key = TokenCache(redis, secret), _key()
    await cache.put(key, "still-valid", "s", 100)  # due for early refresh, but valid for the caller
    limited = Upstream(fail=RateLimited("429", retry_after_s=30))
    assert (await cache.get_or_fetch(key, 60, limited)).access_token == "still-valid"
    assert (await cache.get_or_fetch(key, 60, limited)).access_token == "still-valid"
    assert limited.calls == 1  # the back-off flag stopped the second request
    with pytest.raises(RateLimited):
        await cache.get_or_fetch(key, 200, limited)  # nobody can serve 200 s


async def test_purge_one_organization(redis: Redis) -> None:
    cache = TokenCache(redis, os.urandom(32))
    org = f"purge{uuid.uuid4().hex[:8]}"
    keys = [_key(org), _key(org), _key(f"{org}x")]
    for key in keys:
        await cache.put(key, "t", "s", 300)
    assert await cache.purge_organization(org) == 2
    assert [await redis.exists(k) for k in keys] == [0, 0, 1]
