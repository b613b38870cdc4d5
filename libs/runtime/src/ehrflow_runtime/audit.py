"""Audit records: auth's tokens, launches and sessions (docs/design/smart.md C4); writeback's views of
drafts, decisions and writes.

Each record is a JSON log line on the ``ehrflow.audit`` logger and an ``AuditRecorded`` event on the
audit topic, which carries the record as a FHIR AuditEvent too (``ehrflow_contracts.audit``). What anyone
can cause at any rate is counted instead and audited as periodic summaries (``Auditor.count``): in auth,
cached tokens handed out again (``token.served``), token requests without a valid service credential
(``token.refused`` with reason ``unauthenticated``) and launches started (``launch.started``), so that
neither a hot path nor an unauthenticated caller makes a log line and a confirmed publish per request.
Callers pass ids and references only; ``details`` never holds a token, assertion, key or free text.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from ehrflow_contracts import AuditRecorded

log = logging.getLogger("ehrflow.audit")

Detail = str | int | float | None
Summary = tuple[str, str, str, Literal["success", "failure"], tuple[tuple[str, str | None], ...]]


class Publisher(Protocol):
    async def publish(self, message: Any, *, key: bytes | None = None, no_confirm: bool = False) -> Any: ...


class Auditor:
    def __init__(self, publisher: Publisher | None, *, source: str, confirm_timeout_s: float = 2.0) -> None:
        self._publisher = publisher
        self._source = source
        self._timeout = confirm_timeout_s
        self._counts: Counter[Summary] = Counter()

    def count(
        self,
        action: str,
        *,
        organization: str | None,
        actor: str | None,
        outcome: Literal["success", "failure"],
        **details: str | None,
    ) -> None:
        """Count one occurrence; ``flush_summaries`` audits the counts, one record per distinct
        (action, organization, actor, outcome, details) and interval, with ``count`` and ``interval_s``."""
        self._counts[(action, organization or "-", actor or "-", outcome, tuple(sorted(details.items())))] += 1

    async def flush_summaries(self, interval_s: float) -> None:
        counts, self._counts = self._counts, Counter()
        for (action, organization, actor, outcome, details), count in sorted(counts.items()):
            await self.record(
                action,
                organization=organization,
                actor=actor,
                outcome=outcome,
                details={**dict(details), "count": count, "interval_s": interval_s},
            )

    async def record(
        self,
        action: str,
        *,
        organization: str | None,
        actor: str | None,
        outcome: Literal["success", "failure"],
        details: Mapping[str, Detail] | None = None,
        patient: str | None = None,
        drafts: Sequence[str] = (),
        entities: Sequence[str] = (),
        correlation_id: str | None = None,
        confirm: bool = True,
    ) -> None:
        """Log and publish one record: ``patient`` a ``Patient/…`` reference, ``drafts`` draft ids,
        ``entities`` ``Type/id`` of FHIR resources. ``confirm=False`` hands it to the producer without
        waiting for the broker."""
        details = dict(details or {})
        record = AuditRecorded(
            organization_id=organization or "-",
            correlation_id=correlation_id or str(details.get("jti") or details.get("session") or action),
            action=action,
            outcome=outcome,
            actor=actor or "-",
            details=details,
            source=self._source,
            patient=patient,
            drafts=tuple(drafts),
            entities=tuple(entities),
        )
        level = logging.INFO if outcome == "success" else logging.WARNING
        where = {"drafts": ",".join(drafts)} if drafts else {}  # ids only; a patient reference stays off the log
        log.log(level, action, extra={"org": organization, "actor": actor, "outcome": outcome, **details, **where})
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
