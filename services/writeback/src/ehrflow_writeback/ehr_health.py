"""Which organizations' EHRs answered "unavailable" moments ago (per replica, in memory).

While an organization's EHR is down, a decision for it goes straight to the first retry tier without a
call that would fail (or hang until its timeout) on the decision partition, so another organization's
decisions behind it on that partition are written at once. The retry tiers always call the EHR: they are
how writeback notices it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HOLD_S = 5.0
"""How long an EHR is taken to be down after it answered so, when it did not say (``Retry-After``)."""
MAX_HOLD_S = 120.0


class EhrHealth:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_until: dict[str, float] = {}

    def down_for(self, org: str) -> float:
        """Seconds the organization's EHR is still taken to be down (0: try it)."""
        left = self._down_until.get(org, 0.0) - self._clock()
        if left <= 0:
            self._down_until.pop(org, None)
            return 0.0
        return left

    def failed(self, org: str, retry_after_s: float | None = None) -> None:
        hold = min(MAX_HOLD_S, max(HOLD_S, retry_after_s or 0.0))
        self._down_until[org] = max(self._down_until.get(org, 0.0), self._clock() + hold)

    def answered(self, org: str) -> None:
        self._down_until.pop(org, None)
