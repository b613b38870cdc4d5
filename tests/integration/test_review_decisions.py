"""The published decision is the one source of a draft's review state (writeback's handlers and review API
on FastStream's in-memory broker, the review queue on the stack's real Redis, the EHR at a transport mock).

Before, the review API changed the queue first and published second: a publish that timed out was
reverted although the record had reached Kafka (the consumer then wrote a draft the clinician was told
had failed), a crash between the two left a draft approved and never written, and an auto-approval was
published only when a draft was new, so a crash after queueing lost it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import TestKafkaBroker
from redis.asyncio import Redis
from starlette.applications import Starlette

from ehrflow_contracts import DraftProposed, topics
from ehrflow_devstack.config import GeneratedConfig, generate, write_registry
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.sealing import Sealer
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings
from ehrflow_writeback.app import ReviewAccess, ReviewContext, routes
from ehrflow_writeback.handlers import Deps, Publishers, declare
from ehrflow_writeback.queue import ReviewQueue

pytestmark = pytest.mark.integration


@dataclass
class Writeback:
    queue: ReviewQueue
    publishers: Publishers
    api: httpx.AsyncClient
    broker: Any
    ehr: MockFhir
    config: GeneratedConfig

    async def decide(self, draft_id: str, action: str = "approve") -> httpx.Response:
        return await self.api.post(
            f"/v1/orgs/org1/drafts/{draft_id}/{action}",
            json={"reviewer": "Practitioner/dr-1"},
            headers={"Authorization": f"Bearer {self.config.review_key('org1')}"},
        )


@pytest.fixture()
async def writeback(stack: Stack, tmp_path: Path) -> AsyncIterator[Writeback]:
    assert stack.redis
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    registry = load_registry(config.organizations_file)
    org1 = registry.get("org1")
    assert org1 is not None
    ehr = MockFhir()
    fhir = ehr.client(org1, service="writeback")
    redis = Redis.from_url(stack.redis.url)
    queue = ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}")
    broker = make_broker(KafkaSettings(), client_id="writeback", consumer=ConsumerPolicy(backoff_s=0, retry_delay_s=0))
    publishers = declare(broker, lambda: Deps(queue=queue, fhir_for=lambda _org, _feature, _type: fhir))
    context = ReviewContext(registry=registry, queue=queue, publishers=publishers, publish_timeout_s=0.5)
    access = ReviewAccess(registry, None)
    app = Starlette(routes=routes(lambda: context, lambda: access))
    async with (
        TestKafkaBroker(broker) as test_broker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://writeback") as api,
    ):
        yield Writeback(queue, publishers, api, test_broker, ehr, config)
    await redis.aclose()


def _draft(**fields: Any) -> DraftProposed:
    return news2_draft(**fields)


def _written(ehr: MockFhir) -> list[str]:
    return [r["resourceType"] for r in ehr.resources]


async def test_a_decision_published_but_confirmed_too_late_is_carried_out_and_never_reverted(
    writeback: Writeback, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = _draft()
    await writeback.broker.publish(draft, topics.DRAFT_PROPOSED)
    publish = writeback.publishers.decisions.publish

    async def reaches_kafka_then_confirms_late(*args: Any, **kwargs: Any) -> Any:
        result = await publish(*args, **kwargs)  # on the bus, and consumed
        await asyncio.sleep(5)  # ...but the acknowledgement comes after the API's timeout
        return result

    monkeypatch.setattr(writeback.publishers.decisions, "publish", reaches_kafka_then_confirms_late)
    answer = await writeback.decide(draft.draft_id)
    assert answer.status_code == 503 and "may still be recorded" in answer.json()["issue"][0]["diagnostics"]
    queued = await writeback.queue.get("org1", draft.draft_id)
    assert queued is not None and queued.status == "written", "the queue says what Kafka holds"
    assert _written(writeback.ehr) == ["RiskAssessment", "Provenance"]
    again = await writeback.decide(draft.draft_id)
    assert again.status_code == 409 and "already written" in again.json()["issue"][0]["diagnostics"]


async def test_the_api_changes_nothing_itself_the_consumer_moves_the_draft(writeback: Writeback) -> None:
    draft = _draft()
    await writeback.broker.publish(draft, topics.DRAFT_PROPOSED)
    answer = await writeback.decide(draft.draft_id, "reject")
    assert answer.status_code == 202 and answer.json()["decision"] == "rejected"
    queued = await writeback.queue.get("org1", draft.draft_id)
    assert queued is not None and (queued.status, queued.fields["reviewer"]) == ("rejected", "Practitioner/dr-1")
    assert _written(writeback.ehr) == []


async def test_an_auto_approval_lost_in_a_crash_is_published_again_when_the_draft_comes_again(
    writeback: Writeback, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = _draft(auto_approve=True)
    publish = writeback.publishers.decisions.publish
    calls = 0

    async def crashes_the_first_time(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("the process died here")
        return await publish(*args, **kwargs)

    monkeypatch.setattr(writeback.publishers.decisions, "publish", crashes_the_first_time)
    await writeback.broker.publish(draft, topics.DRAFT_PROPOSED)  # queued; its approval lost; tried again
    queued = await writeback.queue.get("org1", draft.draft_id)
    assert queued is not None and queued.status == "written"
    assert queued.fields["reviewer"] == "Device/ehrflow-auto-approval"
    assert _written(writeback.ehr) == ["RiskAssessment", "Provenance"]
