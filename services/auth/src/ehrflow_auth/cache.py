"""The token cache shared by all auth replicas (Redis), with a single-flight lock per cache key.

- Redis owns expiry (the key's TTL is the token's remaining life), so pod clocks do not matter.
- Values are sealed with AES-GCM, the cache key as associated data: a value copied under another
  organization's key (or read by anyone without the cache secret) does not open, and counts as a miss.
- One replica asks the EHR while the others wait for its result (``SET NX PX`` lock, owner token,
  compare-and-delete release).
- A 429 sets a shared back-off flag; meanwhile a token that still has the caller's minimum life is served.
- Each replica also keeps a token in memory for at most ``LOCAL_MAX_AGE_S`` (never past Redis's TTL), so
  the hot path makes no Redis round trip; a purge or a rejected digest bypasses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from ehrflow_auth.token_request import RateLimited
from ehrflow_runtime.errors import UpstreamUnavailable
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.sealing import Sealer

EARLY_REFRESH_S = 60
"""A cached token is served only with at least the caller's minimum + this many seconds left."""
LOCK_TTL_MS = 15_000
LOCAL_MAX_AGE_S = 5.0
"""How long a replica serves a token from memory before asking Redis again (never past Redis's TTL)."""

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


def cache_key(org: Organization, feature: str, token_endpoint: str) -> str:
    """Hash of everything that makes a token distinct (docs/design/smart.md E1): two organizations, or two
    features of one organization, never share a key."""
    auth = org.backend_auth
    parts = [
        org.id,
        auth.client_id,
        token_endpoint,
        auth.assertion_audience or token_endpoint,
        org.fhir_base_url,
        feature,
        " ".join(sorted((org.scope_for(feature) or "").split())),
        auth.method,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"ehrflow:auth:token:{org.id}:{digest}"


def organization_pattern(org_id: str) -> str:
    return f"ehrflow:auth:token:{org_id}:*"


class TokenCache:
    def __init__(self, redis: Redis, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the token cache secret must be 32 bytes (AES-256-GCM)")
        self._redis = redis
        self._sealer = Sealer(secret)
        self._local: dict[str, tuple[str, str, float, float]] = {}
        self._inflight: dict[tuple[str, str | None], asyncio.Future[CachedToken]] = {}
        """key → (token, scope, expires at, re-check Redis at), on this replica's monotonic clock."""
        self._release = redis.register_script(_RELEASE)

    def _seal(self, key: str, payload: dict[str, str]) -> bytes:
        return self._sealer.seal(key, json.dumps(payload).encode())

    def _open(self, key: str, sealed: bytes) -> dict[str, str] | None:
        plain = self._sealer.open(key, sealed)
        if plain is None:
            return None
        data: dict[str, str] = json.loads(plain)
        return data

    async def get(
        self, key: str, min_ttl: float, *, reject: str | None = None, margin: float = EARLY_REFRESH_S
    ) -> CachedToken | None:
        """A cached token with ``min_ttl + margin`` life left, unless its digest is ``reject``.

        Served from this replica's memory for up to ``LOCAL_MAX_AGE_S`` (the hot path makes no Redis round
        trip), else from Redis, whose TTL stays the only source of a token's remaining life.
        """
        now = time.monotonic()
        local = self._local.get(key)
        if local and now < local[3] and (reject is None or token_digest(local[0]) != reject):
            remaining = local[2] - now
            if remaining >= min_ttl + margin:
                return CachedToken(local[0], local[1], remaining)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
        if raw is None or pttl is None or pttl < 0:
            return None
        remaining = pttl / 1000
        if remaining < min_ttl + margin:
            return None
        data = self._open(key, raw)
        if data is None or (reject is not None and token_digest(data["access_token"]) == reject):
            return None
        self._remember(key, data["access_token"], data["scope"], remaining)
        return CachedToken(data["access_token"], data["scope"], remaining)

    def _remember(self, key: str, access_token: str, scope: str, remaining: float) -> None:
        now = time.monotonic()
        self._local[key] = (access_token, scope, now + remaining, now + min(LOCAL_MAX_AGE_S, remaining))

    async def put(self, key: str, access_token: str, scope: str, expires_in: int) -> None:
        await self._redis.set(key, self._seal(key, {"access_token": access_token, "scope": scope}), ex=expires_in)
        self._remember(key, access_token, scope, float(expires_in))

    async def purge_organization(self, org_id: str) -> int:
        """Drop every cached token of an organization (its key rotated, or it was disabled)."""
        prefix = organization_pattern(org_id).removesuffix("*")
        for key in [k for k in self._local if k.startswith(prefix)]:
            del self._local[key]
        keys = [k async for k in self._redis.scan_iter(match=organization_pattern(org_id), count=500)]
        return int(await self._redis.delete(*keys)) if keys else 0

    async def get_or_fetch(
        self,
        key: str,
        min_ttl: float,
        fetch: Callable[[], Awaitable[tuple[str, str, int]]],
        *,
        reject: str | None = None,
        wait_s: float = 12.0,
    ) -> CachedToken:
        """Single flight inside this replica (one coroutine per key talks to Redis), then across replicas."""
        hit = await self.get(key, min_ttl, reject=reject)
        if hit:
            return hit
        slot = (key, reject)
        running = self._inflight.get(slot)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[CachedToken] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = future
        try:
            result = await self._get_or_fetch_shared(key, min_ttl, fetch, reject=reject, wait_s=wait_s)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it; nobody else needs to see it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[slot]

    async def _get_or_fetch_shared(
        self,
        key: str,
        min_ttl: float,
        fetch: Callable[[], Awaitable[tuple[str, str, int]]],
        *,
        reject: str | None,
        wait_s: float,
    ) -> CachedToken:
        """Serve from cache, or let exactly one replica fetch while the others wait for its result.

        ``reject`` is the digest of a token a caller saw refused (a FHIR 401): it counts as a miss, so the
        first replica to take the lock replaces it and everyone else then finds the new one.
        """
        backoff = f"{key}:backoff"
        lock, owner = f"{key}:lock", secrets.token_hex(16)
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            if await self._redis.exists(backoff):
                return await self._still_valid(key, min_ttl, reject)
            if await self._redis.set(lock, owner, nx=True, px=LOCK_TTL_MS):
                try:
                    hit = await self.get(key, min_ttl, reject=reject)  # filled between our miss and our lock?
                    if hit:
                        return hit
                    try:
                        access_token, scope, expires_in = await fetch()
                    except RateLimited as exc:
                        await self._redis.set(backoff, "1", px=max(1, int(exc.retry_after_s * 1000)))
                        return await self._still_valid(key, min_ttl, reject)
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

    async def _still_valid(self, key: str, min_ttl: float, reject: str | None) -> CachedToken:
        """During a 429 back-off: the cached token if it still covers the caller, without early refresh."""
        hit = await self.get(key, min_ttl, reject=reject, margin=0)
        if hit is None:
            raise RateLimited("token endpoint rate-limited and no cached token is valid long enough", retry_after_s=0)
        return hit
