"""A notification with organization 2's secret on organization 1's path is refused and publishes nothing."""

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


def _notify_org1(stack: Stack, observation_id: str, *, secret_of: str) -> int:
    assert stack.config
    event = (1, samples.observation(observation_id, "Patient/isolation"))
    body = json.dumps(samples.r4_backport(events=[event], subscription=f"isolation-{uuid.uuid4().hex[:8]}"))
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret(secret_of)}
    return httpx.post(f"{stack.urls['ingest']}/v1/notify/org1", content=body, headers=headers, timeout=10).status_code


def test_cross_organization_secret_is_401_and_nothing_reaches_kafka(stack: Stack) -> None:
    assert stack.broker
    assert _notify_org1(stack, "isolation-probe", secret_of="org2") == 401
    # Control: organization 1's own secret is accepted, so the probe would be visible had it got through.
    assert _notify_org1(stack, "isolation-control", secret_of="org1") == 200
    foci = [(e.get("focus") or {}).get("reference") for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)]
    assert "Observation/isolation-control" in foci
    assert "Observation/isolation-probe" not in foci
