"""Every shape the sandbox EHR sends reaches Kafka once (the wire shapes in docs/design/notifications.md).

Five subscriptions on SEKMET watch the same marked Observation: classic with payload (``PUT
{endpoint}/Observation/{id}``), classic without (an empty ``POST`` ping), and topic-based full-resource,
id-only and empty. One Observation is created; each subscription's event is on the events topic exactly
once. A sixth, topic-based with a one-second heartbeat, shows heartbeats going to the control topic only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ehrflow_contracts import topics
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.scenario import (
    BACKPORT,
    MARKER_CODES,
    Ehr,
    marked_observation,
    subscription,
    vital_signs_topic,
)
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

ORG = "org2"


@pytest.fixture()
def ehr(stack: Stack) -> Iterator[Ehr]:
    assert stack.config
    client = Ehr(stack.ehrs[ORG].url, stack.config.admin_token)
    client.put(vital_signs_topic())
    yield client
    client.close()


def wait_active(ehr: Ehr, sub_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ehr.http.get(f"/Subscription/{sub_id}").json().get("status") != "active":
        assert time.monotonic() < deadline, f"Subscription/{sub_id} did not become active"
        time.sleep(0.3)


def test_classic_put_ping_and_topic_full_id_only_empty_each_reach_kafka_once(stack: Stack, ehr: Ehr) -> None:
    assert stack.config and stack.broker
    marker = f"shape-{uuid.uuid4().hex[:8]}"
    criteria = f"Observation?code={MARKER_CODES}|{marker}"
    endpoint = f"{stack.urls['ingest']}/v1/notify/{ORG}"
    header = f"{WEBHOOK_HEADER}: {stack.config.webhook_secret(ORG)}"

    def classic(payload: bool) -> dict[str, Any]:
        channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "header": [header]}
        if payload:
            channel["payload"] = "application/fhir+json"
        return {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "shapes",
            "criteria": criteria,
            "channel": channel,
        }

    def topic(content: str, heartbeat_s: int | None = None) -> dict[str, Any]:
        sub = subscription(endpoint, WEBHOOK_HEADER, stack.config.webhook_secret(ORG), content)  # type: ignore[union-attr]
        sub["_criteria"]["extension"][0]["valueString"] = criteria
        if heartbeat_s:
            sub["channel"]["extension"] = [
                {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": heartbeat_s}
            ]
        return sub

    def classic_pings() -> int:
        return sum(
            1
            for r in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)  # type: ignore[union-attr]
            if r["organization_id"] == ORG and r["flavour"] == "r4-classic" and r.get("focus") is None
        )

    subs: dict[str, str] = {}
    try:
        for label, resource in {
            "classic-put": classic(payload=True),
            "classic-ping": classic(payload=False),
            "full-resource": topic("full-resource"),
            "id-only": topic("id-only"),
            "empty": topic("empty"),
            "heartbeat": topic("empty", heartbeat_s=1),
        }.items():
            subs[label] = ehr.create(resource)["id"]
        for label in ("full-resource", "id-only", "empty", "heartbeat"):  # classic ones have no handshake
            wait_active(ehr, subs[label])
        pings_before = classic_pings()
        patient = ehr.create({"resourceType": "Patient", "name": [{"family": "Shapes"}]})
        obs = ehr.create(marked_observation(f"Patient/{patient['id']}", marker))
        focus = f"Observation/{obs['id']}"

        def topic_events(records: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
            return [r for r in records if r.get("subscription") == f"Subscription/{subs[label]}"]

        def classic_puts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                r for r in records if r["flavour"] == "r4-classic" and (r.get("focus") or {}).get("reference") == focus
            ]

        wait_for_records(
            stack.broker.url,
            topics.NOTIFICATION_RECEIVED,
            lambda recs: (
                all(topic_events(recs, x) for x in ("full-resource", "id-only", "empty", "heartbeat"))
                and bool(classic_puts(recs))
            ),
            timeout=60,
        )
        time.sleep(3)  # SEKMET retries after 1 s and 2 s: a duplicate would be here by now
        records = read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)

        [put] = classic_puts(records)
        assert (put["interaction"], put["resource"]["id"], put["patient"]) == (
            "update",
            obs["id"],
            f"Patient/{patient['id']}",
        )
        assert classic_pings() == pings_before + 1
        [full] = topic_events(records, "full-resource")
        assert (full["content_level"], full["focus"]["reference"], full["resource"]["id"]) == (
            "full-resource",
            focus,
            obs["id"],
        )
        [ids] = topic_events(records, "id-only")
        assert (ids["content_level"], ids["focus"]["reference"], ids["resource"]) == ("id-only", focus, None)
        [empty] = topic_events(records, "empty")
        assert (empty["content_level"], empty["focus"], empty["event_number"]) == ("empty", None, 1)
        assert len(topic_events(records, "heartbeat")) == 1  # the event; its heartbeats are not events

        signals = read_topic(stack.broker.url, topics.SUBSCRIPTION_SIGNAL)
        beats = [s for s in signals if s.get("subscription") == f"Subscription/{subs['heartbeat']}"]
        assert {s["notification_type"] for s in beats} == {"handshake", "heartbeat"}
        assert all(s["organization_id"] == ORG for s in beats)
    finally:
        for sub_id in subs.values():
            ehr.delete(f"Subscription/{sub_id}")
