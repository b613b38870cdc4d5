"""Re-delivery of the same notification: 200 again, and one record on Kafka (subscriptions.md items 9, 22);
the dedupe store's states against a real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.dedupe import Dedupe
from ehrflow_runtime.redis_client import make_redis

pytestmark = pytest.mark.integration


def test_the_same_event_twice_is_published_once(stack: Stack) -> None:
    assert stack.config and stack.broker
    marker = f"dedupe-{uuid.uuid4().hex[:8]}"
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}
    answers = []
    for _ in range(2):  # a sender retrying, with a new Bundle id and status fullUrl each time
        body = json.dumps(samples.r4_backport(events=[(41, samples.observation(marker))], subscription=marker))
        answers.append(httpx.post(f"{stack.urls['ingest']}/v1/notify/org1", content=body, headers=headers, timeout=10))
    assert [a.status_code for a in answers] == [200, 200]
    assert "1 duplicate" in answers[1].json()["issue"][0]["diagnostics"]
    events = [
        e
        for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)
        if (e.get("focus") or {}).get("reference") == f"Observation/{marker}"
    ]
    assert len(events) == 1


@pytest.fixture()
async def dedupe(stack: Stack) -> AsyncIterator[Dedupe]:
    assert stack.redis
    redis = make_redis(stack.redis.url)  # as the service makes it
    try:
        yield Dedupe(redis)
    finally:
        await redis.aclose()


def fresh() -> str:
    return uuid.uuid4().hex


async def test_a_settled_key_is_a_duplicate_and_a_pending_one_in_flight(dedupe: Dedupe) -> None:
    settled, pending = fresh(), fresh()
    assert (await dedupe.claim([settled, pending])).new == [settled, pending]
    dedupe.settle([settled])
    await dedupe.flush()
    again = await dedupe.claim([settled, pending])
    assert (again.new, again.duplicates, again.in_flight) == ([], [settled], [pending])


async def test_a_confirmation_and_a_claim_in_one_call_are_taken_in_that_order(dedupe: Dedupe) -> None:
    key = fresh()
    assert (await dedupe.claim([key])).new == [key]
    dedupe.settle([key])  # not written yet: it travels with the next claim
    assert dedupe._sender is not None
    again = await dedupe.claim([key])
    assert again.duplicates == [key]


async def test_two_deliveries_in_one_call_are_new_and_in_flight(dedupe: Dedupe) -> None:
    key = fresh()
    first, second = await asyncio.gather(dedupe.claim([key]), dedupe.claim([key]))
    assert (first.new, second.in_flight) == ([key], [key])


async def test_a_key_whose_alias_is_done_is_a_duplicate_that_is_still_claimed(dedupe: Dedupe) -> None:
    key, alias = fresh(), fresh()
    await dedupe.claim([alias])
    dedupe.settle([alias])
    await dedupe.flush()
    claims = await dedupe.claim([key], {key: alias})
    assert (claims.new, claims.duplicates, claims.seen_as_alias) == ([], [key], [key])


async def test_a_released_claim_is_new_again(dedupe: Dedupe) -> None:
    key = fresh()
    await dedupe.claim([key])
    await dedupe.release([key])
    assert (await dedupe.claim([key])).new == [key]


async def test_without_redis_claims_fail_and_confirmations_are_given_up() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    dedupe = Dedupe(redis)
    dedupe.settle([fresh()])
    with pytest.raises(RedisError):
        await dedupe.claim([fresh()])
    await dedupe.flush()  # returns: a confirmation that cannot be written leaves its claim to expire
    assert dedupe._sender is None
    await redis.aclose()
