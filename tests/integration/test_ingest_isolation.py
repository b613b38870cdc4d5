"""A notification with organization 2's secret on organization 1's path is refused and publishes nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def test_cross_organization_secret_is_401_and_nothing_reaches_kafka(stack: Stack) -> None:
    assert stack.config and stack.broker
    marker = "isolation-probe"
    body = json.dumps(samples.r4_backport(events=[(1, samples.observation(marker, "Patient/isolation"))]))
    sent = httpx.post(
        f"{stack.urls['ingest']}/v1/notify/org1",
        content=body,
        timeout=10,
        headers={"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org2")},
    )
    assert sent.status_code == 401
    # Control: the same body with organization 1's own secret is accepted, so the probe would be visible.
    control = json.dumps(
        samples.r4_backport(events=[(1, samples.observation(f"{marker}-control", "Patient/isolation"))])
    )
    accepted = httpx.post(
        f"{stack.urls['ingest']}/v1/notify/org1",
        content=control,
        timeout=10,
        headers={"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")},
    )
    assert accepted.status_code == 200
    foci = [(e.get("focus") or {}).get("reference") for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)]
    assert f"Observation/{marker}-control" in foci
    assert f"Observation/{marker}" not in foci
