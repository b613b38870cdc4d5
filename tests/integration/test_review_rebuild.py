"""The review view comes back from the log: drafts, decisions, card feedback and write results are on Kafka;
Redis is flushed and writeback restarted, and the queue and every status are as they were. Also: a draft
from newer data makes the patient's pending draft of the same workflow stale, which then cannot be approved.

Real parts: a broker and a Redis of the test's own (so flushing it disturbs nobody), the stack's auth service
and sandbox EHR, and a writeback process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ehrflow_contracts import DraftProposed, topics
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.kafka_read import publish_events
from ehrflow_devstack.parts import Part, start_redis
from ehrflow_devstack.processes import Process, free_port
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


class Writeback:
    def __init__(self, stack: Stack, broker: Part, store: Part, folder: Path) -> None:
        self.stack, self.broker, self.store, self.folder = stack, broker, store, folder
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process: Process | None = None

    def start(self) -> None:
        self.process, _ = self.stack.start_service(
            "writeback",
            self.folder / "writeback.log",
            url=self.url,
            EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=self.broker.url,
            EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE="false",
            EHRFLOW_REDIS_URL=self.store.url,
        )

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def _headers(self, org: str) -> dict[str, str]:
        assert self.stack.config
        return {"Authorization": f"Bearer {self.stack.config.review_key(org)}"}

    def queue(self, org: str) -> dict[str, dict[str, Any]]:
        """Every draft of the organization by id, as the review API shows it (all statuses)."""
        found: dict[str, dict[str, Any]] = {}
        for status in ("pending", "approved", "rejected", "written", "failed", "stale"):
            answer = httpx.get(
                f"{self.url}/v1/orgs/{org}/drafts", params={"status": status}, headers=self._headers(org), timeout=20
            )
            found |= {d["draft_id"]: d for d in answer.json()["drafts"]}
        return found

    def decide(self, draft: DraftProposed, action: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/orgs/{draft.organization_id}/drafts/{draft.draft_id}/{action}",
            json={"reviewer": "Practitioner/dr-1", **body},
            headers=self._headers(draft.organization_id),
            timeout=20,
        )


@pytest.fixture()
def writeback(stack: Stack, private_broker: Part, tmp_path: Path) -> Iterator[Writeback]:
    store = start_redis(tmp_path)
    found = Writeback(stack, private_broker, store, tmp_path)
    try:
        found.start()
        yield found
    finally:
        found.stop()
        store.stop()


def _until(done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_flushed_redis_and_a_restart_bring_back_the_same_queue_and_statuses(writeback: Writeback) -> None:
    now = datetime.now(UTC)
    drafts = [news2_draft("org1", f"Patient/rebuild-{i}", occurred_at=now - timedelta(minutes=5)) for i in range(4)]
    newer = news2_draft("org1", "Patient/rebuild-3", occurred_at=now)  # supersedes drafts[3]
    other = news2_draft("org2", "Patient/rebuild-other")
    asyncio.run(publish_events(writeback.broker.url, topics.DRAFT_PROPOSED, [*drafts, newer, other]))
    _until(lambda: len(writeback.queue("org1")) == 5 and len(writeback.queue("org2")) == 1)
    assert writeback.decide(drafts[0], "approve").status_code == 202
    rejected = writeback.decide(drafts[1], "reject", reason="not now", reason_code="already-addressed")
    assert rejected.status_code == 202
    _until(lambda: [writeback.queue("org1")[d.draft_id]["status"] for d in drafts[:2]] == ["written", "rejected"])
    stale = writeback.decide(drafts[3], "approve")
    assert stale.status_code == 409 and "stale" in stale.text, "a superseded draft cannot be approved"
    before = {org: writeback.queue(org) for org in ("org1", "org2")}
    assert before["org1"][drafts[3].draft_id]["status"] == "stale"
    assert before["org1"][drafts[0].draft_id]["resource_ref"].startswith("RiskAssessment/")

    writeback.stop()
    redis.Redis.from_url(writeback.store.url).flushall()
    writeback.start()

    after = {org: writeback.queue(org) for org in ("org1", "org2")}
    assert after == before, "the same drafts, statuses, reviewers, reasons and written references"
