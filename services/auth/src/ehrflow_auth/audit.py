"""Audit records: every token issued or refused, every launch and session (smart-auth.md C4, issue 3).

Each record is a JSON log line on the ``ehrflow.audit`` logger and an ``AuditRecorded`` event on the
audit topic; cached tokens handed out again are counted and audited as periodic ``token.served``
summaries (see ``Auditor.served``). Callers pass ids and references only; ``details`` never holds a
token, assertion or key.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from ehrflow_contracts import AuditRecorded

log = logging.getLogger("ehrflow.audit")

Detail = str | int | float | None


class Publisher(Protocol):
    async def publish(self, message: Any, *, key: bytes | None = None, no_confirm: bool = False) -> Any: ...


class Auditor:
    def __init__(self, publisher: Publisher | None, *, confirm_timeout_s: float = 2.0) -> None:
        self._publisher = publisher
        self._timeout = confirm_timeout_s
        self._served: Counter[tuple[str, str, str]] = Counter()

    def served(self, organization: str, service: str, feature: str) -> None:
        """Count a cached token handed to a service; ``flush_served`` audits the counts as summaries.

        Handing out an already-issued token again is the hot path: one summary record per service,
        organization and feature per interval keeps it free of a log line and a publish per request.
        Every token issued upstream and every refusal stays an individual record.
        """
        self._served[(organization, service, feature)] += 1

    async def flush_served(self, interval_s: float) -> None:
        counts, self._served = self._served, Counter()
        for (organization, service, feature), count in sorted(counts.items()):
            await self.record(
                "token.served",
                organization=organization,
                actor=service,
                outcome="success",
                details={"feature": feature, "count": count, "interval_s": interval_s},
            )

    async def record(
        self,
        action: str,
        *,
        organization: str | None,
        actor: str | None,
        outcome: Literal["success", "failure"],
        details: Mapping[str, Detail] | None = None,
        confirm: bool = True,
    ) -> None:
        """Log and publish one record. ``confirm=False`` hands it to the producer without waiting for the
        broker (for the per-request ``token.served`` records on the hot path)."""
        details = dict(details or {})
        record = AuditRecorded(
            organization_id=organization or "-",
            correlation_id=str(details.get("jti") or details.get("session") or action),
            action=action,
            outcome=outcome,
            actor=actor or "-",
            details=details,
        )
        level = logging.INFO if outcome == "success" else logging.WARNING
        log.log(level, action, extra={"org": organization, "actor": actor, "outcome": outcome, **details})
        if self._publisher is None:
            return
        key = (organization or "-").encode()
        try:
            if confirm:
                await asyncio.wait_for(self._publisher.publish(record, key=key), self._timeout)
            else:
                await self._publisher.publish(record, key=key, no_confirm=True)
        except Exception as exc:  # auditing must not take the token service down; the log line stands
            log.error("audit record not published", extra={"action": action, "error": type(exc).__name__})
