"""Where errors meet Kafka consumers, for every consumer at once: one broker middleware.

A record whose handling fails is never allowed to stop its partition for good:

| what failed | what happens |
|---|---|
| ``RetryableError``, or Redis unreachable | pause ``retry_delay_s``, then nack: the record comes again (an outage ends) |
| ``PermanentError`` | dead-lettered at once: the same input fails the same way |
| the record is not JSON, or data does not validate (pydantic) | dead-lettered at once |
| anything else (a bug, an answer of a shape nobody expected) | tried ``attempts`` times in all, with doubling pauses, then dead-lettered |

A dead letter names the record (topic, partition, offset, key), the reason, and carries the record's own
value so it can be inspected and replayed; the partition then moves on. Reasons name an error's type and
where in the code it was raised, never its message: a message may quote the data (a ``KeyError`` quotes
the key), and data may be PHI. ``PermanentError`` messages are ehrflow's own and carry no PHI by rule.
Publishing the dead letter is itself durable: if it fails, the record is nacked and handled again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import FastStreamException, IgnoredException
from prometheus_client import Counter
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ehrflow_contracts import DeadLettered, topics
from ehrflow_runtime.errors import PermanentError, RetryableError
from ehrflow_runtime.settings import ConsumerPolicy

log = logging.getLogger("ehrflow.consumer")

TRANSIENT: tuple[type[BaseException], ...] = (RetryableError, RedisConnectionError, RedisTimeoutError)
"""Failures of something outside the record: wait for it, however long (nothing is lost meanwhile)."""

_NOT_RETRIED_HERE: tuple[type[BaseException], ...] = (*TRANSIENT, PermanentError, ValidationError, FastStreamException)
"""Errors that trying the same record again right away cannot mend (or that are FastStream's control flow)."""

DEAD_LETTERS = Counter(
    "ehrflow_dead_letters", "Records a consumer gave up on, by source topic and kind of failure.", ["topic", "kind"]
)
RETRIES = Counter("ehrflow_consumer_retries", "Records handled again after a failure.", ["topic", "kind"])


class _Unexpected(Exception):
    """Raised in place of an unexpected error once its attempts are used up."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{where(cause)} after {attempts} attempts")
        self.cause = cause


def where(exc: BaseException) -> str:
    """An error's type and the innermost line that raised it: enough to find the bug, no data."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{at}"


def reason(exc: BaseException) -> tuple[str, str]:
    """``(kind, reason)`` for a dead letter, without data from the record."""
    if isinstance(exc, _Unexpected):
        return "unexpected", str(exc)
    if isinstance(exc, PermanentError):
        return "permanent", str(exc)
    if isinstance(exc, ValidationError):  # the record against the topic's schema, or data the handler built
        fields = sorted({".".join(str(p) for p in e["loc"]) or "(record)" for e in exc.errors()})
        return "invalid", f"data does not validate as {exc.title} at {', '.join(fields[:10])}"
    return "undecodable", f"the record could not be decoded ({type(exc).__name__})"


class ConsumerErrors:
    """Broker middleware factory: ``KafkaBroker(..., middlewares=[ConsumerErrors(policy)])``."""

    def __init__(self, policy: ConsumerPolicy) -> None:
        self.policy = policy

    def __call__(self, msg: Any, /, **kwargs: Any) -> _Guard:
        return _Guard(msg, policy=self.policy, **kwargs)


class _Guard(BaseMiddleware):
    def __init__(self, msg: Any, /, *, policy: ConsumerPolicy, **kwargs: Any) -> None:
        super().__init__(msg, **kwargs)
        self.policy = policy

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        failures = 0
        while True:
            try:
                return await call_next(msg)
            except _NOT_RETRIED_HERE:
                raise
            except Exception as exc:
                failures += 1
                if failures >= self.policy.attempts:
                    raise _Unexpected(exc, failures) from exc
                pause = self.policy.backoff(failures)
                log.warning(
                    "trying a record again", extra={**_position(self.msg), "error": where(exc), "pause_s": pause}
                )
                RETRIES.labels(getattr(self.msg, "topic", "?"), "unexpected").inc()
                await asyncio.sleep(pause)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool:
        if not isinstance(exc_val, Exception) or isinstance(exc_val, IgnoredException):
            return False  # success, or FastStream's own control flow (ack, nack, skip, stop)
        position = _position(self.msg)
        if isinstance(exc_val, TRANSIENT):
            log.warning("record will be redelivered", extra={**position, "error": where(exc_val)})
            RETRIES.labels(position["topic"], "transient").inc()
            await asyncio.sleep(self.policy.retry_delay_s)
            return False  # raised on: the record is nacked and comes again
        kind, why = reason(exc_val)
        await self._dead_letter(why, position)
        DEAD_LETTERS.labels(position["topic"], kind).inc()
        log.error("record dead-lettered", extra={**position, "kind": kind, "reason": why})
        return True  # handled: the record is acknowledged and the partition moves on

    async def _dead_letter(self, why: str, position: dict[str, Any]) -> None:
        raw = self.msg
        value: bytes = getattr(raw, "value", None) or b""
        key: bytes | None = getattr(raw, "key", None)
        try:
            record = json.loads(value)
        except ValueError:
            record = None
        fields = record if isinstance(record, dict) else {}
        org = fields.get("organization_id")
        if not isinstance(org, str):
            org = key.split(b"|", 1)[0].decode(errors="replace") if key else "unknown"
        correlation = fields.get("correlation_id")
        letter = DeadLettered(
            organization_id=org,
            correlation_id=correlation if isinstance(correlation, str) else "",
            source_topic=position["topic"],
            error=why,
            payload={
                **position,
                "event_id": fields.get("event_id"),
                "key": key.decode(errors="replace") if key else None,
                "record": record if record is not None else value.decode(errors="replace"),
            },
        )
        broker = self.context.get("broker")
        await broker.publish(letter, topics.DEAD_LETTER, key=key)


def _position(raw: Any) -> dict[str, Any]:
    """Where a record is: topic, partition, offset. Ids only, never the record."""
    return {
        "topic": getattr(raw, "topic", "?"),
        "partition": getattr(raw, "partition", None),
        "offset": getattr(raw, "offset", None),
    }
