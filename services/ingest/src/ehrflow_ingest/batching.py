"""Coalescing background writes: what requests hand over is written in batches, one batch at a time per key.

A request adds its item and returns at once. While one batch is being written, later items gather into
the next, so a busy key costs one write per round trip instead of one per request. With ``linger_s``
the writer also waits that long before taking each batch, so a busy key costs one write per linger
whatever the round trip; without it a quiet key writes at once. Used for work that must not hold up
the answer to an EHR once its event is on Kafka: subscription tracking (dedupe confirmations ride on
the next claim call instead, ``dedupe.Dedupe``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

log = logging.getLogger("ehrflow.ingest.batching")


class Batcher(Generic[K, T]):
    def __init__(
        self,
        name: str,
        write: Callable[[K, list[T]], Awaitable[None]],
        *,
        max_pending: int = 100_000,
        linger_s: float = 0.0,
    ) -> None:
        self._name = name
        self._linger = linger_s
        self._write = write
        self._max_pending = max_pending
        self._pending: dict[K, list[T]] = {}
        self._writers: dict[K, asyncio.Task[None]] = {}
        self._full: set[K] = set()

    def add(self, key: K, item: T) -> None:
        waiting = self._pending.setdefault(key, [])
        if len(waiting) >= self._max_pending:  # a stalled store: drop rather than grow without bound
            if key not in self._full:
                self._full.add(key)
                log.warning("batch backlog full; dropping", extra={"batcher": self._name})
            return
        waiting.append(item)
        if key not in self._writers:
            self._writers[key] = asyncio.get_running_loop().create_task(self._drain(key))

    async def _drain(self, key: K) -> None:
        try:
            while self._pending.get(key):
                if self._linger:
                    await asyncio.sleep(self._linger)
                batch = self._pending.pop(key)
                self._full.discard(key)
                try:
                    await self._write(key, batch)
                except Exception as exc:  # the caller's write reports its own failures; never lose the loop
                    log.warning("batch not written", extra={"batcher": self._name, "reason": type(exc).__name__})
        finally:
            self._writers.pop(key, None)

    async def flush(self) -> None:
        """Wait until everything added so far is written (or given up): at shutdown, and in tests."""
        while self._writers:
            await asyncio.gather(*list(self._writers.values()), return_exceptions=True)
