"""The token cache shared by all auth replicas (Redis), with a single-flight lock per cache key.

Redis owns expiry (the key's TTL is the token's remaining life), so pod clocks do not matter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from ehrflow_runtime.errors import UpstreamUnavailable
from ehrflow_runtime.organizations import Organization

EARLY_REFRESH_S = 60
"""A cached token is served only with at least the caller's minimum + this many seconds left."""
LOCK_TTL_MS = 15_000

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    scope: str
    remaining_s: float


def token_digest(access_token: str) -> str:
    """How callers name a token they saw refused, without sending the token itself."""
    return hashlib.sha256(access_token.encode()).hexdigest()


def cache_key(org: Organization, token_endpoint: str) -> str:
    """Hash of everything that makes a token distinct: two organizations never share a key."""
    parts = [
        org.id,
        org.backend_auth.client_id,
        token_endpoint,
        org.fhir_base_url,
        " ".join(sorted(org.backend_auth.scopes)),
        org.backend_auth.method,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"ehrflow:auth:token:{org.id}:{digest}"


class TokenCache:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._release = redis.register_script(_RELEASE)

    async def get(self, key: str, min_ttl: float, *, reject: str | None = None) -> CachedToken | None:
        """A cached token with enough life left, unless its digest is ``reject`` (a caller saw it fail)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
        if raw is None or pttl is None or pttl < 0:
            return None
        remaining = pttl / 1000
        if remaining < min_ttl + EARLY_REFRESH_S:
            return None
        data = json.loads(raw)
        if reject is not None and token_digest(data["access_token"]) == reject:
            return None
        return CachedToken(data["access_token"], data["scope"], remaining)

    async def put(self, key: str, access_token: str, scope: str, expires_in: int) -> None:
        await self._redis.set(key, json.dumps({"access_token": access_token, "scope": scope}), ex=expires_in)

    async def purge(self, key: str) -> None:
        await self._redis.delete(key)

    async def get_or_fetch(
        self,
        key: str,
        min_ttl: float,
        fetch: Callable[[], Awaitable[tuple[str, str, int]]],
        *,
        reject: str | None = None,
        wait_s: float = 12.0,
    ) -> CachedToken:
        """Serve from cache, or let exactly one replica fetch while the others wait for its result.

        ``reject`` is the digest of a token a caller saw refused (a FHIR 401): it counts as a miss, so the
        first replica to take the lock replaces it and everyone else then finds the new one.
        """
        hit = await self.get(key, min_ttl, reject=reject)
        if hit:
            return hit
        lock, owner = f"{key}:lock", secrets.token_hex(16)
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            if await self._redis.set(lock, owner, nx=True, px=LOCK_TTL_MS):
                try:
                    hit = await self.get(key, min_ttl, reject=reject)  # filled between our miss and our lock?
                    if hit:
                        return hit
                    access_token, scope, expires_in = await fetch()
                    await self.put(key, access_token, scope, expires_in)
                    return CachedToken(access_token, scope, float(expires_in))
                finally:
                    await self._release(keys=[lock], args=[owner])
            await asyncio.sleep(0.05)
            hit = await self.get(key, min_ttl, reject=reject)
            if hit:
                return hit
            if asyncio.get_running_loop().time() > deadline:
                raise UpstreamUnavailable("timed out waiting for another replica's token request")
