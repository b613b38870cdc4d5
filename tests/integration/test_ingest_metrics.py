"""Ingest's per-notification metrics, read from its /metrics as Prometheus would.

Each outcome is counted under its organization, events published are counted once (a duplicate is 200
but publishes nothing), and every answer lands in the latency histogram under its status.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.metrics import metric
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

SERIES = {
    "accepted": ("ehrflow_ingest_notifications_total", {"organization": "org1", "outcome": "accepted"}),
    "rejected": ("ehrflow_ingest_notifications_total", {"organization": "org1", "outcome": "rejected"}),
    "unauthenticated": ("ehrflow_ingest_notifications_total", {"organization": "org1", "outcome": "unauthenticated"}),
    "other org accepted": ("ehrflow_ingest_notifications_total", {"organization": "org2", "outcome": "accepted"}),
    "published": ("ehrflow_ingest_events_published_total", {"organization": "org1", "kind": "event"}),
    "duplicates": ("ehrflow_ingest_duplicates_total", {"organization": "org1"}),
    "answered 200": ("ehrflow_ingest_request_seconds_count", {"outcome": "200"}),
    "answered 400": ("ehrflow_ingest_request_seconds_count", {"outcome": "400"}),
    "answered 401": ("ehrflow_ingest_request_seconds_count", {"outcome": "401"}),
    "200 within 5 s": ("ehrflow_ingest_request_seconds_bucket", {"outcome": "200", "le": "5.0"}),
    "200 at all": ("ehrflow_ingest_request_seconds_bucket", {"outcome": "200", "le": "+Inf"}),
}


def read(ingest: str) -> dict[str, float]:
    return {what: metric(ingest, name, **labels) for what, (name, labels) in SERIES.items()}


def test_outcomes_events_duplicates_and_latency_are_counted(stack: Stack) -> None:
    assert stack.config
    ingest = stack.urls["ingest"]
    body = json.dumps(
        samples.r4_backport(
            events=[(1, samples.observation(f"metrics-{uuid.uuid4().hex[:8]}", "Patient/metrics"))],
            subscription=f"metrics-{uuid.uuid4().hex[:8]}",
        )
    )
    own = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}
    before = read(ingest)

    def post(content: str, headers: dict[str, str]) -> int:
        return httpx.post(f"{ingest}/v1/notify/org1", content=content, headers=headers, timeout=10).status_code

    assert post(body, own) == 200
    assert post(body, own) == 200  # the same notification again: a duplicate
    assert post("{not json", own) == 400
    assert post(body, {**own, WEBHOOK_HEADER: stack.config.webhook_secret("org2")}) == 401

    after = read(ingest)
    assert {what: after[what] - before[what] for what in SERIES} == {
        "accepted": 2,
        "rejected": 1,
        "unauthenticated": 1,
        "other org accepted": 0,  # organization 1's requests count under organization 1 only
        "published": 1,
        "duplicates": 1,
        "answered 200": 2,
        "answered 400": 1,
        "answered 401": 1,
        "200 within 5 s": 2,
        "200 at all": 2,
    }
    total = metric(ingest, "ehrflow_ingest_request_seconds_sum", outcome="200")
    assert total > 0
