"""Re-delivery of the same notification: 200 again, and one record on Kafka (subscriptions.md items 9, 22)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.stack import Stack

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
