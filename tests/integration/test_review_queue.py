"""The review queue on a real Redis: idempotent queueing, atomic decisions, per-organization keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed, ModelRef
from ehrflow_devstack.stack import Stack
from ehrflow_writeback.queue import ReviewQueue

pytestmark = pytest.mark.integration


@pytest.fixture()
async def queue(stack: Stack) -> AsyncIterator[ReviewQueue]:
    assert stack.redis
    redis = Redis.from_url(stack.redis.url)
    yield ReviewQueue(redis, prefix=f"test:{uuid.uuid4().hex}")
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
