"""The review queue, kept in Redis per organization.

Redis holds derived state only: every draft and decision is also on Kafka, the source of truth, and
the queue can be rebuilt by replaying ``DRAFT_PROPOSED`` and ``REVIEW_DECIDED``.

A draft moves ``pending → approved | rejected | stale``, and ``approved → written | failed``. A pending
draft becomes *stale* when a draft of the same workflow for the same patient from newer data arrives: it
can no longer be approved (the newer one is the one to review). Transitions are atomic
(Lua), so two reviewers deciding at once cannot both win. Keys carry the organization id: a draft is
only ever found under the organization that produced it.

What Redis holds is bounded and sealed: a draft (the AI output, its inputs' references) and a reviewer's
free-text reason are AES-256-GCM sealed with the draft's key as associated data (``ehrflow_runtime.
sealing``), and a draft expires ``ttl_s`` after it was queued, with its index entries. Each status has
an index per organization and one per patient, so a clinician's session lists its own patient's drafts
however many other patients' are waiting. (The per-patient keys are named inside the script: Redis
standalone or Sentinel, not Cluster, as for ingest.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed
from ehrflow_runtime.sealing import Sealer

Status = Literal["pending", "approved", "rejected", "written", "failed", "stale"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "rejected", "written", "failed", "stale")

_TRANSITION = """
-- KEYS: draft hash, index of the expected status, index of the new status
-- ARGV: expected, new, now, draft id, then field/value pairs to record
-- The patient's own indexes are the status indexes' names followed by ':' and the draft's patient.
local current = redis.call('hget', KEYS[1], 'status')
if not current then return {0, ''} end
if current ~= ARGV[1] then return {0, current} end
redis.call('hset', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
for i = 5, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
local patient = redis.call('hget', KEYS[1], 'patient') or ''
redis.call('zrem', KEYS[2], ARGV[4])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
redis.call('zrem', KEYS[2] .. ':' .. patient, ARGV[4])
redis.call('zadd', KEYS[3] .. ':' .. patient, ARGV[3], ARGV[4])
return {1, ARGV[2]}
"""
_ANNOTATE = """
-- KEYS: draft hash; ARGV: field/value pairs. Only a draft that exists is annotated.
if redis.call('exists', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
SEALED_FIELDS = frozenset({"draft", "reason", "card_feedback_comment"})
"""Hash fields that may carry PHI (the draft; a reviewer's free text): sealed, never stored plain."""
VIEW_FIELDS = (
    "reviewer",
    "reason",
    "reason_code",
    "edited",
    "resource_ref",
    "provenance_ref",
    "detail",
    "card_feedback",
    "card_feedback_at",
    "card_feedback_reason",
    "card_feedback_comment",
)
"""What a reviewer of the organization sees of a draft's record besides the draft itself."""
TTL_S = 30 * 24 * 3600


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
            **{k: v for k, v in self.fields.items() if k in VIEW_FIELDS},
        }


class ReviewQueue:
    def __init__(self, redis: Redis, sealer: Sealer, prefix: str = "ehrflow:writeback", *, ttl_s: int = TTL_S) -> None:
        self._redis = redis
        self._sealer = sealer
        self._prefix = prefix
        self._ttl = ttl_s
        self._transition = redis.register_script(_TRANSITION)
        self._annotate = redis.register_script(_ANNOTATE)

    @property
    def ttl_s(self) -> int:
        return self._ttl

    async def view_built(self) -> bool:
        """Whether this Redis holds the view (written once it was built; gone with a flushed or new Redis)."""
        return bool(await self._redis.exists(f"{self._prefix}:view-built"))

    async def mark_view_built(self) -> None:
        await self._redis.set(f"{self._prefix}:view-built", str(time.time()))

    def _draft_key(self, org: str, draft_id: str) -> str:
        return f"{self._prefix}:{org}:draft:{draft_id}"

    def _index(self, org: str, status: str, patient: str | None = None) -> str:
        index = f"{self._prefix}:{org}:status:{status}"
        return index if patient is None else f"{index}:{patient}"

    async def add(self, draft: DraftProposed, *, queued_at: float | None = None) -> bool:
        """Queue a draft once: a redelivered draft changes nothing. True when it was new. ``queued_at``: when it
        was first queued, for a rebuild (its expiry runs from then)."""
        key = self._draft_key(draft.organization_id, draft.draft_id)
        sealed = self._sealer.seal(key, draft.model_dump_json().encode())
        created = await self._redis.hsetnx(key, "draft", sealed)
        if created:
            now = time.time() if queued_at is None else queued_at
            org, patient = draft.organization_id, draft.patient
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"status": "pending", "updated_at": str(now), "patient": patient})
                pipe.expire(key, max(1, int(now + self._ttl - time.time())))
                pipe.zadd(self._index(org, "pending"), {draft.draft_id: now})
                pipe.zadd(self._index(org, "pending", patient), {draft.draft_id: now})
                await pipe.execute()
        return bool(created)

    async def get(self, org: str, draft_id: str) -> QueuedDraft | None:
        key = self._draft_key(org, draft_id)
        raw = await self._redis.hgetall(key)
        if not raw or b"draft" not in raw:
            return None
        fields: dict[str, str] = {}
        for name, value in raw.items():
            field = _text(name)
            if field in SEALED_FIELDS:
                plain = self._sealer.open(key, value if isinstance(value, bytes) else value.encode("latin-1"))
                if plain is None:  # not sealed under this key (moved from another): not this draft
                    return None
                fields[field] = plain.decode()
            else:
                fields[field] = _text(value)
        draft = DraftProposed.model_validate_json(fields.pop("draft"))
        if draft.organization_id != org:  # defence in depth: keys are already per organization
            return None
        return QueuedDraft(draft, fields.get("status", "pending"), fields)  # type: ignore[arg-type]

    async def list(
        self, org: str, status: Status, *, patient: str | None = None, limit: int = 100
    ) -> list[QueuedDraft]:
        """Up to ``limit`` drafts of ``status``, oldest first: the organization's, or one patient's (its own
        index, so other patients' drafts never crowd it out). Entries of expired drafts are dropped."""
        index = self._index(org, status, patient)
        await self._redis.zremrangebyscore(index, "-inf", time.time() - self._ttl)
        ids = await self._redis.zrange(index, 0, limit - 1)
        found = [(_text(i), await self.get(org, _text(i))) for i in ids]
        gone = [i for i, q in found if q is None]
        if gone:
            await self._redis.zrem(index, *gone)
        return [q for _, q in found if q is not None]

    async def supersede(self, draft: DraftProposed) -> tuple[str, ...]:
        """Mark stale what ``draft`` supersedes: the patient's pending drafts of its workflow from older data;
        or ``draft`` itself when a pending one from newer data is already queued (arrivals out of order).
        Returns the ids marked stale."""
        org, patient = draft.organization_id, draft.patient
        pending = [
            q
            for q in await self.list(org, "pending", patient=patient, limit=1000)
            if q.draft.workflow == draft.workflow and q.draft.draft_id != draft.draft_id
        ]
        marked: tuple[str, ...] = ()
        for q in pending:
            older, newer = (q.draft, draft) if q.draft.occurred_at < draft.occurred_at else (draft, q.draft)
            if older.occurred_at == newer.occurred_at:
                continue
            done, _ = await self.transition(
                org, older.draft_id, "pending", "stale", detail=f"superseded by draft {newer.draft_id} from newer data"
            )
            if done:
                marked += (older.draft_id,)
        return marked

    async def annotate(self, org: str, draft_id: str, **fields: str) -> bool:
        """Record fields on a queued draft (feedback on its card); False when there is no such draft."""
        key = self._draft_key(org, draft_id)
        args: list[str | bytes] = []
        for k, v in fields.items():
            args += [k, self._sealer.seal(key, v.encode()) if k in SEALED_FIELDS else v]
        return bool(await self._annotate(keys=[key], args=args))

    async def transition(
        self, org: str, draft_id: str, expected: Status, new: Status, **fields: str
    ) -> tuple[bool, str]:
        """Atomically move ``expected → new``. Returns (done, status now); status '' = no such draft."""
        key = self._draft_key(org, draft_id)
        args: list[str | bytes] = [expected, new, str(time.time()), draft_id]
        for k, v in fields.items():
            args += [k, self._sealer.seal(key, v.encode()) if k in SEALED_FIELDS else v]
        keys = [key, self._index(org, expected), self._index(org, new)]
        done, status = await self._transition(keys=keys, args=args)
        return bool(done), _text(status)


def _text(value: object) -> str:
    """Redis answers bytes (or str when a client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
