"""Durability under a broker outage (docs/design/notifications.md item 7).

5,000 notifications are posted concurrently while the broker is paused midway (SIGSTOP for 10 s, then
SIGCONT; the local broker keeps data in memory, so killing it would test the broker, not ingest). Every
notification that got 200 is on Kafka afterwards, exactly once; every other one got 503, never anything
else, and every request was answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.parts import Part
from ehrflow_devstack.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOTIFICATIONS = 5_000
CONCURRENCY = 64
PAUSE_AFTER = 1_500  # answers before the broker is paused
PAUSE_S = 10.0


async def post_all(url: str, secret: str, marker: str, broker: Part) -> dict[int, int]:
    """Posts with aiohttp: httpx's async pool managed ~140 requests/s at 64 connections here, even against
    an empty Starlette app, and would have made this a test of the client."""
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: secret}
    answers: dict[int, int] = {}
    midway = asyncio.Event()
    gate = asyncio.Semaphore(CONCURRENCY)
    assert broker.process is not None

    async def post(http: aiohttp.ClientSession, n: int) -> None:
        body = json.dumps(samples.r4_backport(events=[(n, samples.observation(f"{marker}-{n}"))], subscription=marker))
        async with gate, http.post(f"{url}/v1/notify/org1", data=body, headers=headers) as response:
            answers[n] = response.status
        if len(answers) == PAUSE_AFTER:
            midway.set()

    async def outage() -> None:
        await midway.wait()
        broker.process.signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            broker.process.signal(signal.SIGCONT)  # type: ignore[union-attr]

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(outage(), *(post(http, n) for n in range(1, NOTIFICATIONS + 1)))
    return answers


def test_every_200_is_on_kafka_once_and_the_rest_got_503(stack: Stack, private_broker: Part, tmp_path: Path) -> None:
    marker = f"durable-{uuid.uuid4().hex[:8]}"
    ingest, url, config = stack.start_ingest_on(private_broker, tmp_path, EHRFLOW_KAFKA__PUBLISH_TIMEOUT_S="3")
    try:
        answers = asyncio.run(post_all(url, config.webhook_secret("org1"), marker, private_broker))
    finally:
        ingest.stop()

    statuses = Counter(answers.values())
    assert len(answers) == NOTIFICATIONS  # every request was answered
    assert set(statuses) == {200, 503}, statuses  # the outage was felt, and nothing but 200 or 503 came back
    on_kafka = Counter(
        r["focus"]["reference"].removeprefix(f"Observation/{marker}-")
        for r in read_topic(private_broker.url, topics.NOTIFICATION_RECEIVED)
        if r.get("subscription") == f"Subscription/{marker}"
    )
    accepted = {str(n) for n, status in answers.items() if status == 200}
    missing = accepted - set(on_kafka)
    assert not missing, f"{len(missing)} notifications answered 200 are not on Kafka"
    repeated = {n: c for n, c in on_kafka.items() if n in accepted and c != 1}
    assert not repeated, f"{len(repeated)} notifications answered 200 are on Kafka more than once"
    print(f"\n{statuses[200]} × 200, {statuses[503]} × 503; records for 503 answers: {len(set(on_kafka) - accepted)}")
