"""Where the error tree meets Kafka consumers: retryable → redeliver, permanent → dead-letter.

Every consumer guards its work with ``retry_or_dead_letter``, so this mapping exists in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from ehrflow_contracts import DeadLettered, Envelope
from ehrflow_runtime.errors import PermanentError, RetryableError

log = logging.getLogger("ehrflow.consumer")


class Publisher(Protocol):
    async def publish(self, message: Any, *, key: bytes | None = None) -> Any: ...


@dataclass
class Failure:
    """Filled in when the guarded work failed permanently and was dead-lettered."""

    error: str | None = None


@contextlib.asynccontextmanager
async def retry_or_dead_letter(
    *,
    message: Envelope,
    source_topic: str,
    dead_letters: Publisher,
    key: bytes,
    retry_delay_s: float,
    context: dict[str, Any] | None = None,
) -> AsyncIterator[Failure]:
    """Run the ``async with`` body; on a retryable error pause and re-raise (the consumer nacks and the
    record comes again), on a permanent one publish a dead letter and return with ``Failure.error`` set.

    ``context`` holds ids for the log and the dead letter: references and ids only, never bodies.
    """
    failure = Failure()
    fields = {"org": message.organization_id, "event_id": message.event_id, "topic": source_topic, **(context or {})}
    try:
        yield failure
    except RetryableError as exc:
        log.warning("retrying message", extra={**fields, "reason": str(exc)})
        await asyncio.sleep(retry_delay_s)
        raise
    except PermanentError as exc:
        log.error("dead-lettering message", extra={**fields, "reason": str(exc)})
        failure.error = str(exc)
        await dead_letters.publish(
            DeadLettered(
                organization_id=message.organization_id,
                correlation_id=message.correlation_id,
                source_topic=source_topic,
                error=str(exc),
                payload={"event_id": message.event_id, **(context or {})},
            ),
            key=key,
        )
