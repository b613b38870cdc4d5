"""Gap detection and recovery against the sandbox EHR (docs/design/notifications.md items 24, 25).

Event numbers 1, 2, 5 arrive for a real SEKMET subscription: ingest raises the gap alert, asks for 3–4
(SEKMET has no ``$events``, so by a ``_lastUpdated`` search of the subscription's criteria) and publishes
the two missed Observations marked recovered; what was delivered is not published again. A counter
that then drops to 1 is a reset, not a gap.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.metrics import metric, metric_reaches
from ehrflow_devstack.scenario import MARKER_CODES, Ehr, marked_observation
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture()
def ehr(stack: Stack) -> Iterator[Ehr]:
    assert stack.config
    client = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    yield client
    client.close()


def test_numbers_1_2_5_raise_a_gap_and_recover_3_and_4_by_search(stack: Stack, ehr: Ehr) -> None:
    assert stack.config and stack.broker
    ingest = stack.urls["ingest"]
    marker = f"gap-{uuid.uuid4().hex[:8]}"
    criteria = f"Observation?code={MARKER_CODES}|{marker}"
    # A subscription the EHR knows (so its criteria can be read) but does not deliver itself ('off').
    sub = ehr.create(
        {
            "resourceType": "Subscription",
            "status": "off",
            "reason": "ehrflow gap test",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/unused"},
        }
    )
    try:
        patient = ehr.create({"resourceType": "Patient", "name": [{"family": "Gap"}]})
        observations = [ehr.create(marked_observation(f"Patient/{patient['id']}", marker)) for _ in range(5)]
        ids = [o["id"] for o in observations]
        gaps_before = metric(ingest, "ehrflow_ingest_gaps_total", organization="org1")
        resets_before = metric(ingest, "ehrflow_ingest_counter_resets_total", organization="org1")
        headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}

        def deliver(number: int, observation: dict[str, Any]) -> None:
            body = samples.r4_backport(events=[(number, observation)], subscription=sub["id"])
            answer = httpx.post(f"{ingest}/v1/notify/org1", content=json.dumps(body), headers=headers, timeout=10)
            assert answer.status_code == 200, answer.text

        for number in (1, 2, 5):
            deliver(number, observations[number - 1])
        # tracking runs in the background, right after the answer
        assert (
            metric_reaches(ingest, "ehrflow_ingest_gaps_total", gaps_before + 1, organization="org1") == gaps_before + 1
        )
        assert metric(ingest, "ehrflow_ingest_missing_events_total", organization="org1") >= 2

        def about_these(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if (r.get("focus") or {}).get("reference", "").split("/")[-1] in ids]

        events = about_these(
            wait_for_records(
                stack.broker.url,
                topics.NOTIFICATION_RECEIVED,
                lambda recs: len({r["focus"]["reference"] for r in about_these(recs)}) == 5,
                timeout=60,
            )
        )
        time.sleep(3)  # another recovery pass would have published duplicates by now
        events = about_these(read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED))
        by_id = {i: [e for e in events if e["focus"]["reference"] == f"Observation/{i}"] for i in ids}
        assert {i: len(found) for i, found in by_id.items()} == dict.fromkeys(ids, 1)  # each exactly once
        assert [by_id[i][0]["recovered"] for i in ids] == [False, False, True, True, False]
        assert by_id[ids[2]][0]["resource"]["code"]["coding"][0]["code"] == marker
        assert metric(ingest, "ehrflow_ingest_recoveries_total", organization="org1", method="search") >= 1

        # The sender restarts and numbers from 1 again: a reset, not a gap storm.
        sixth = ehr.create(marked_observation(f"Patient/{patient['id']}", marker))
        deliver(1, sixth)
        resets = metric_reaches(ingest, "ehrflow_ingest_counter_resets_total", resets_before + 1, organization="org1")
        assert resets == resets_before + 1
        assert metric(ingest, "ehrflow_ingest_gaps_total", organization="org1") == gaps_before + 1
    finally:
        ehr.delete(f"Subscription/{sub['id']}")
