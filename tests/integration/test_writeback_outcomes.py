"""Writes that meet an unavailable EHR, a refusing EHR or a refused type (writeback's handlers on FastStream's
in-memory broker, the review queue on the stack's real Redis, the EHR at a transport mock that answers as
told). The fault test with the sandbox EHR really stopped is ``tests/e2e/test_writes_survive.py``."""

from __future__ import annotations

import copy
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from redis.asyncio import Redis

from ehrflow_contracts import DeadLettered, DraftProposed, ReviewDecided, topics
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.retry_tiers import HEADER_ATTEMPT, RetryPolicy
from ehrflow_runtime.sealing import Sealer
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings
from ehrflow_writeback.ehr_health import EhrHealth
from ehrflow_writeback.handlers import Deps, Publishers, declare
from ehrflow_writeback.queue import ReviewQueue

pytestmark = pytest.mark.integration

REVIEWER = "Practitioner/dr-1"


@dataclass
class Writes:
    queue: ReviewQueue
    publishers: Publishers
    broker: Any
    ehrs: dict[str, MockFhir]
    dead: list[dict[str, Any]]
    tiers: list[str]
    sent: list[tuple[str, str]]
    """(draft id, attempts so far) of each record sent to a tier."""
    health: EhrHealth

    async def approve(self, draft: DraftProposed) -> None:
        await self.broker.publish(draft, topics.DRAFT_PROPOSED)
        decision = ReviewDecided(
            organization_id=draft.organization_id,
            correlation_id="c",
            draft_id=draft.draft_id,
            decision="approved",
            reviewer=REVIEWER,
            decided_at=draft.received_at,
        )
        await self.broker.publish(decision, topics.REVIEW_DECIDED)

    async def status(self, draft: DraftProposed) -> tuple[str, str]:
        queued = await self.queue.get(draft.organization_id, draft.draft_id)
        assert queued is not None
        return queued.status, queued.fields.get("detail", "")


@pytest.fixture()
async def writes(stack: Stack, tmp_path: Path) -> AsyncIterator[Writes]:
    assert stack.redis
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    raw = copy.deepcopy(yaml.safe_load(config.organizations_file.read_text()))
    raw["organizations"]["org2"]["writeback"] = {"refuse": ["Flag"]}
    config.organizations_file.write_text(yaml.safe_dump(raw))
    registry = load_registry(config.organizations_file)
    ehrs = {"org1": MockFhir(), "org2": MockFhir(base="https://ehr2.example.org/fhir")}
    clients: dict[str, FhirClient] = {}
    for org in registry:
        clients[org.id] = ehrs[org.id].client(org, service="writeback")

    def fhir_for(org: str, _feature: str, resource_type: str) -> FhirClient:
        found = registry.get(org)
        if found is not None and resource_type in found.writeback.refuse:
            raise ConfigurationError(f"organization {org} does not accept a {resource_type} from ehrflow")
        return clients[org]

    redis = Redis.from_url(stack.redis.url)
    queue = ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}")
    broker = make_broker(KafkaSettings(), client_id="writeback", consumer=ConsumerPolicy(backoff_s=0, retry_delay_s=0))
    health = EhrHealth()
    policy = RetryPolicy(delays_s=(0.2, 0.2, 0.2))
    publishers = declare(broker, lambda: Deps(queue=queue, fhir_for=fhir_for, health=health), policy)
    dead: list[dict[str, Any]] = []
    tiers: list[str] = []
    sent: list[tuple[str, str]] = []

    @broker.subscriber(topics.DEAD_LETTER, group_id="test-dead")
    async def on_dead(letter: DeadLettered) -> None:
        dead.append(letter.model_dump(mode="json"))

    def observe(topic: str) -> None:
        @broker.subscriber(topic, group_id=f"test-{topic}")
        async def on_tier(decision: ReviewDecided, message: KafkaMessage) -> None:
            tiers.append(topic)
            sent.append((decision.draft_id, message.headers.get(HEADER_ATTEMPT, "")))

    for topic in topics.WRITEBACK_RETRIES:
        observe(topic)

    async with TestKafkaBroker(broker) as test_broker:
        yield Writes(queue, publishers, test_broker, ehrs, dead, tiers, sent, health)
    await redis.aclose()


def _written(ehr: MockFhir) -> list[str]:
    return [r["resourceType"] for r in ehr.resources]


async def test_an_unavailable_ehr_is_tried_again_from_a_retry_tier_and_written_once(writes: Writes) -> None:
    draft = news2_draft()
    writes.ehrs["org1"].fail_next = [503]  # the first attempt meets a 503; the decision goes to the first tier
    started = time.monotonic()
    await writes.approve(draft)
    assert await writes.status(draft) == ("written", "")
    assert _written(writes.ehrs["org1"]) == ["RiskAssessment", "Provenance"]
    assert writes.tiers == [topics.WRITEBACK_RETRIES[0]]
    assert time.monotonic() - started >= 0.2, "the tier's delay was waited"


async def test_retry_after_longer_than_the_tier_delay_is_honoured(writes: Writes) -> None:
    draft = news2_draft()
    ehr = writes.ehrs["org1"]
    ehr.fail_next = [(503, {"Retry-After": "2"})]
    started = time.monotonic()
    await writes.approve(draft)
    assert await writes.status(draft) == ("written", "")
    assert time.monotonic() - started >= 2.0, "the second attempt waited for the EHR's Retry-After, not 0.2 s"
    assert set(writes.tiers) == {topics.WRITEBACK_RETRIES[0]}, "went round the first tier until due: no attempt"


async def test_after_the_last_tier_the_decision_is_dead_lettered_with_its_record_and_replays(writes: Writes) -> None:
    draft = news2_draft()
    writes.ehrs["org1"].down = {}
    await writes.approve(draft)
    status, detail = await writes.status(draft)
    assert status == "approved" and "dead letters" in detail, "never lost: approved, and says where it is"
    (letter,) = writes.dead
    assert letter["error"].endswith("(after 4 attempts)") and letter["source_topic"] == topics.WRITEBACK_RETRIES[-1]
    assert (
        letter["payload"]["topic"] == topics.REVIEW_DECIDED
        and letter["payload"]["record"]["draft_id"] == draft.draft_id
    )
    assert _written(writes.ehrs["org1"]) == []
    writes.ehrs["org1"].down = None
    await writes.broker.publish(ReviewDecided.model_validate(letter["payload"]["record"]), topics.REVIEW_DECIDED)
    assert await writes.status(draft) == ("written", "")
    assert _written(writes.ehrs["org1"]) == ["RiskAssessment", "Provenance"]


async def test_while_an_organizations_ehr_is_down_its_decisions_leave_without_a_call(writes: Writes) -> None:
    writes.health.failed("org1", retry_after_s=30)  # as after a 503 with Retry-After: 30 from org1's EHR
    down, other = news2_draft("org1"), news2_draft("org2")
    await writes.approve(down)
    await writes.approve(other)
    assert (down.draft_id, "0") in writes.sent, "sent to the first tier with no attempt made"
    assert await writes.status(down) == ("written", "")
    assert await writes.status(other) == ("written", "")
    assert not any(d == other.draft_id for d, _ in writes.sent), "org2's write went straight through"


@pytest.mark.parametrize("status", [409, 412, 422])
async def test_a_refusing_ehr_is_a_defined_outcome_on_the_draft(writes: Writes, status: int) -> None:
    draft = news2_draft()
    writes.ehrs["org1"].fail_next = [status]
    await writes.approve(draft)
    assert await writes.status(draft) == ("failed", f"org1 FHIR POST RiskAssessment answered {status}")
    assert writes.tiers == [], "a refusal is not retried"


async def test_a_type_the_organization_refuses_is_not_written(writes: Writes) -> None:
    flag = news2_draft(
        "org2",
        resource={
            "resourceType": "Flag",
            "status": "inactive",
            "code": {"text": "AI"},
            "subject": {"reference": "Patient/p1"},
        },
    )
    await writes.approve(flag)
    status, detail = await writes.status(flag)
    assert status == "failed" and "does not accept a Flag" in detail
    assert _written(writes.ehrs["org2"]) == []
