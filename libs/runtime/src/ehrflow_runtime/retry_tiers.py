"""Delayed retry tiers, shared by the consumers that use them (inference's evaluations, writeback's writes).

A record that failed for now leaves its partition for the first of three retry topics, each with its delay;
a tier's consumer waits until the record is due (in the headers) and tries again; after the last tier the
record is dead-lettered. Records of one tier all wait the same delay, so they fall due in the order written;
a record due later than its tier's delay (an upstream asked for more with ``Retry-After``) goes round the
tier again, which is not an attempt, so it never holds the records behind it longer than the delay.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, Field, field_validator

HEADER_ATTEMPT = "ehrflow-attempt"
HEADER_DUE = "ehrflow-due"
HEADER_REASON = "ehrflow-retry-reason"


class RetryPolicy(BaseModel):
    delays_s: tuple[float, float, float] = Field(
        default=(5.0, 30.0, 120.0),
        description="The delay of each retry tier. An event has one try on its partition and one per tier, then "
        "it is dead-lettered. At most 240 s each: a tier's consumer waits that long holding its partition.",
    )

    @field_validator("delays_s")
    @classmethod
    def _bounded(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0 < d <= 240 for d in value):
            raise ValueError("each retry delay is more than 0 and at most 240 seconds")
        return value


def due_at(delay_s: float, retry_after_s: float | None = None, *, now: float | None = None) -> float:
    """When a record sent to a tier falls due: after the tier's delay, or later if the upstream asked."""
    start = time.time() if now is None else now
    return start + max(delay_s, retry_after_s or 0.0)


def headers(attempt: int, due: float, why: str) -> dict[str, str]:
    return {HEADER_ATTEMPT: str(attempt), HEADER_DUE: f"{due:.3f}", HEADER_REASON: why[:500]}


def retry_after_s(value: str | None, *, cap_s: float = 3600.0) -> float | None:
    """An HTTP ``Retry-After`` in seconds from now: delay-seconds or an HTTP-date; None when absent or not
    understood. Capped, so a server cannot park a record for days."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(cap_s, max(0.0, seconds))
