"""The review queue on a real Redis: idempotent queueing, atomic decisions, per-organization keys."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed, ModelRef
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.sealing import Sealer
from ehrflow_writeback.queue import ReviewQueue

pytestmark = pytest.mark.integration


@pytest.fixture()
async def queue(stack: Stack) -> AsyncIterator[ReviewQueue]:
    assert stack.redis
    redis = Redis.from_url(stack.redis.url)
    yield ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}")
    await redis.aclose()


def _draft(org: str = "org1", draft_id: str = "d1") -> DraftProposed:
    return DraftProposed(
        organization_id=org,
        correlation_id="c",
        draft_id=draft_id,
        workflow="news2",
        model=ModelRef(name="m", version="1"),
        patient="Patient/p1",
        resource={"resourceType": "RiskAssessment"},
        basis=(),
    )


async def test_queueing_is_idempotent(queue: ReviewQueue) -> None:
    assert await queue.add(_draft()) is True
    assert await queue.add(_draft()) is False
    assert [q.draft.draft_id for q in await queue.list("org1", "pending")] == ["d1"]


async def test_concurrent_decisions_have_one_winner(queue: ReviewQueue) -> None:
    await queue.add(_draft())
    results = await asyncio.gather(
        *[
            queue.transition("org1", "d1", "pending", "approved" if i % 2 else "rejected", reviewer=f"Practitioner/{i}")
            for i in range(20)
        ]
    )
    assert sum(done for done, _ in results) == 1
    queued = await queue.get("org1", "d1")
    assert queued is not None and queued.status in ("approved", "rejected")
    assert await queue.list("org1", "pending") == []
    assert len(await queue.list("org1", queued.status)) == 1


async def test_a_draft_is_only_found_under_its_own_organization(queue: ReviewQueue) -> None:
    await queue.add(_draft("org1", "d-org1"))
    assert await queue.get("org2", "d-org1") is None
    assert await queue.list("org2", "pending") == []
    assert await queue.transition("org2", "d-org1", "pending", "approved") == (False, "")
    queued = await queue.get("org1", "d-org1")
    assert queued is not None and queued.status == "pending"


async def test_drafts_and_reasons_are_sealed_at_rest_and_bound_to_their_key(queue: ReviewQueue, stack: Stack) -> None:
    assert stack.redis
    draft = _draft()
    draft = draft.model_copy(update={"resource": {"resourceType": "RiskAssessment", "note": [{"text": "Jane Roe"}]}})
    await queue.add(draft)
    await queue.transition("org1", "d1", "pending", "rejected", reviewer="Practitioner/1", reason="Jane's own words")
    redis = Redis.from_url(stack.redis.url)
    key = queue._draft_key("org1", "d1")  # noqa: SLF001 - looking at what Redis holds
    stored = await redis.hgetall(key)
    assert b"Jane" not in b"".join(stored.values())
    queued = await queue.get("org1", "d1")
    assert queued is not None and queued.fields["reason"] == "Jane's own words"
    assert queued.draft.resource["note"][0]["text"] == "Jane Roe"
    # The same sealed value under another organization's key does not open: not a draft there.
    await redis.hset(queue._draft_key("org2", "d1"), mapping=stored)  # noqa: SLF001
    assert await queue.get("org2", "d1") is None
    assert 0 < await redis.ttl(key) <= 30 * 24 * 3600
    await redis.aclose()


async def test_a_patients_draft_is_listed_however_many_other_patients_wait(queue: ReviewQueue) -> None:
    """Listing stopped at 100 before filtering by patient: a clinician could miss their own patient's draft."""
    for i in range(150):
        await queue.add(_draft(draft_id=f"other-{i}").model_copy(update={"patient": f"Patient/other-{i}"}))
    await queue.add(_draft(draft_id="mine").model_copy(update={"patient": "Patient/mine"}))
    assert [q.draft.draft_id for q in await queue.list("org1", "pending", patient="Patient/mine")] == ["mine"]
    await queue.transition("org1", "mine", "pending", "approved", reviewer="Practitioner/1")
    assert await queue.list("org1", "pending", patient="Patient/mine") == []
    assert [q.draft.draft_id for q in await queue.list("org1", "approved", patient="Patient/mine")] == ["mine"]


async def test_drafts_expire_with_their_index_entries(stack: Stack) -> None:
    assert stack.redis
    redis = Redis.from_url(stack.redis.url)
    short = ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}", ttl_s=1)
    await short.add(_draft())
    assert [q.draft.draft_id for q in await short.list("org1", "pending")] == ["d1"]
    await asyncio.sleep(1.5)  # waits for Redis's expiry, asserts no duration
    assert await short.get("org1", "d1") is None
    assert await short.list("org1", "pending") == [] and await short.list("org1", "pending", patient="Patient/p1") == []
    assert await redis.zcard(short._index("org1", "pending")) == 0  # noqa: SLF001
    await redis.aclose()
