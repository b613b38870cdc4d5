"""The review queue, kept in Redis per organization.

Redis holds derived state only: every draft and decision is also on Kafka, the source of truth, and
the queue can be rebuilt by replaying ``DRAFT_PROPOSED`` and ``REVIEW_DECIDED``.

A draft moves ``pending → approved | rejected``, and ``approved → written``. Transitions are atomic
(Lua), so two reviewers deciding at once cannot both win. Keys carry the organization id: a draft is
only ever found under the organization that produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed

Status = Literal["pending", "approved", "rejected", "written", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "rejected", "written", "failed")

_TRANSITION = """
-- KEYS: draft hash, index of the expected status, index of the new status
-- ARGV: expected, new, now, draft id, then field/value pairs to record
local current = redis.call('hget', KEYS[1], 'status')
if not current then return {0, ''} end
if current ~= ARGV[1] then return {0, current} end
redis.call('hset', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
for i = 5, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('zrem', KEYS[2], ARGV[4])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
return {1, ARGV[2]}
"""


@dataclass(frozen=True)
class QueuedDraft:
    draft: DraftProposed
    status: Status
    fields: dict[str, str]

    def view(self) -> dict[str, Any]:
        """What the review API shows a reviewer of this organization."""
        d = self.draft
        return {
            "draft_id": d.draft_id,
            "status": self.status,
            "workflow": d.workflow,
            "patient": d.patient,
            "model": d.model.model_dump(),
            "summary": d.summary,
            "basis": list(d.basis),
            "resource": d.resource,
            "proposed_at": d.received_at.isoformat(),
            **{
                k: v
                for k, v in self.fields.items()
                if k in ("reviewer", "reason", "resource_ref", "provenance_ref", "detail")
            },
        }


class ReviewQueue:
    def __init__(self, redis: Redis, prefix: str = "ehrflow:writeback") -> None:
        self._redis = redis
        self._prefix = prefix
        self._transition = redis.register_script(_TRANSITION)

    def _draft_key(self, org: str, draft_id: str) -> str:
        return f"{self._prefix}:{org}:draft:{draft_id}"

    def _index(self, org: str, status: str) -> str:
        return f"{self._prefix}:{org}:status:{status}"

    async def add(self, draft: DraftProposed) -> bool:
        """Queue a draft once: a redelivered draft changes nothing. True when it was new."""
        key = self._draft_key(draft.organization_id, draft.draft_id)
        created = await self._redis.hsetnx(key, "draft", draft.model_dump_json())
        if created:
            now = time.time()
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"status": "pending", "updated_at": str(now)})
                pipe.zadd(self._index(draft.organization_id, "pending"), {draft.draft_id: now})
                await pipe.execute()
        return bool(created)

    async def get(self, org: str, draft_id: str) -> QueuedDraft | None:
        raw = await self._redis.hgetall(self._draft_key(org, draft_id))
        if not raw or b"draft" not in raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        draft = DraftProposed.model_validate_json(fields.pop("draft"))
        if draft.organization_id != org:  # defence in depth: keys are already per organization
            return None
        return QueuedDraft(draft, fields.get("status", "pending"), fields)  # type: ignore[arg-type]

    async def list(self, org: str, status: Status, limit: int = 100) -> list[QueuedDraft]:
        ids = await self._redis.zrange(self._index(org, status), 0, limit - 1)
        found = [await self.get(org, _text(i)) for i in ids]
        return [q for q in found if q is not None]

    async def transition(
        self, org: str, draft_id: str, expected: Status, new: Status, **fields: str
    ) -> tuple[bool, str]:
        """Atomically move ``expected → new``. Returns (done, status now); status '' = no such draft."""
        args: list[str] = [expected, new, str(time.time()), draft_id]
        for k, v in fields.items():
            args += [k, v]
        keys = [self._draft_key(org, draft_id), self._index(org, expected), self._index(org, new)]
        done, status = await self._transition(keys=keys, args=args)
        return bool(done), _text(status)


def _text(value: object) -> str:
    """Redis answers bytes (or str when a client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
