"""The process's Redis client: a blocking pool, so a burst waits for a connection instead of failing."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

MAX_CONNECTIONS = 64
WAIT_FOR_CONNECTION_S = 5.0


def make_redis(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=WAIT_FOR_CONNECTION_S)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections too
