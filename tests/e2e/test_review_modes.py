"""Review modes end to end on the local stack: organization 1 runs NEWS2 in shadow mode (drafted and
recorded, never shown or written), organization 2 auto-approves only drafts whose band is low.

The organization file is changed while the services run and reloaded with SIGHUP, as an operator would;
it is restored afterwards.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from ehrflow_contracts import topics
from ehrflow_contracts.fhir import SYSTEM_DRAFT
from ehrflow_devstack.config import ORGS, WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.scenario import TOPIC_URL, Ehr, PatientCase, Vitals
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

LOW = Vitals(16, 97, 0, 128, 72, "A", 37.0)
HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)


def _reloads(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r'^ehrflow_config_reloads_total\{outcome="success"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _reload(stack: Stack) -> None:
    """SIGHUP inference and writeback, and wait until both run the file as it is now."""
    before = {name: _reloads(stack.urls[name]) for name in ("inference", "writeback")}
    for name in before:
        stack.services[name].signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while any(_reloads(stack.urls[name]) <= count for name, count in before.items()):
        assert time.monotonic() < deadline, "services reloaded the organization file"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def modes(stack: Stack) -> Iterator[dict[str, Ehr]]:
    assert stack.config
    path = stack.config.organizations_file
    original = path.read_text()
    data = yaml.safe_load(original)
    data["organizations"]["org1"]["workflows"]["news2"]["review"] = {"mode": "shadow"}
    data["organizations"]["org2"]["workflows"]["news2"]["review"] = {
        "mode": "auto-approve",
        "when": {"field": "band", "one_of": ["low"]},
    }
    ehrs = {o.id: Ehr(stack.ehrs[o.id].url, stack.config.admin_token) for o in ORGS}
    path.write_text(yaml.safe_dump(data))
    try:
        _reload(stack)
        for org, ehr in ehrs.items():
            subscribed = [s for s in ehr.search("Subscription", status="active") if s.get("criteria") == TOPIC_URL]
            if not subscribed:  # this module may run alone, without the reference scenario before it
                ehr.subscribe(
                    f"{stack.urls['ingest']}/v1/notify/{org}",
                    WEBHOOK_HEADER,
                    stack.config.webhook_secret(org),
                    "full-resource",
                )
        yield ehrs
    finally:
        path.write_text(original)
        _reload(stack)
        for ehr in ehrs.values():
            ehr.close()


def _chart(ehr: Ehr, key: str, vitals: Vitals) -> str:
    case = ehr.record_patient(PatientCase(key, "Mode", key.title(), "1950-01-01", vitals, "x"))
    return case.ids["patient"]


def _drafts(records: list[dict[str, Any]], patients: set[str]) -> dict[str, dict[str, Any]]:
    return {r["patient"]: r for r in records if r.get("patient") in patients}


def test_shadow_mode_records_drafts_and_neither_shows_nor_writes_them(stack: Stack, modes: dict[str, Ehr]) -> None:
    assert stack.broker and stack.config
    patients = {_chart(modes["org1"], "shadow-low", LOW), _chart(modes["org1"], "shadow-high", HIGH)}
    shadowed = wait_for_records(
        stack.broker.url, topics.DRAFT_SHADOWED, lambda rs: set(_drafts(rs, patients)) == patients
    )
    drafts = _drafts(shadowed, patients)
    assert {d["summary"]["band"] for d in drafts.values()} == {"low", "high"}
    time.sleep(3)  # what would follow a proposed draft (queueing, auto-approval) has had its time
    proposed = _drafts(read_topic(stack.broker.url, topics.DRAFT_PROPOSED), patients)
    assert proposed == {}
    review = httpx.get(
        f"{stack.urls['writeback']}/v1/orgs/org1/drafts",
        params={"status": "pending"},
        headers={"Authorization": f"Bearer {stack.config.review_key('org1')}"},
    ).json()["drafts"]
    assert not {d["patient"] for d in review} & patients
    for draft in drafts.values():
        assert modes["org1"].search("RiskAssessment", _tag=f"{SYSTEM_DRAFT}|{draft['draft_id']}") == []


def test_auto_approval_writes_only_what_meets_its_condition(stack: Stack, modes: dict[str, Ehr]) -> None:
    assert stack.broker and stack.config
    low, high = _chart(modes["org2"], "auto-low", LOW), _chart(modes["org2"], "auto-high", HIGH)
    proposed = wait_for_records(
        stack.broker.url, topics.DRAFT_PROPOSED, lambda rs: set(_drafts(rs, {low, high})) == {low, high}
    )
    drafts = _drafts(proposed, {low, high})
    assert (drafts[low]["auto_approve"], drafts[high]["auto_approve"]) == (True, False)
    headers = {"Authorization": f"Bearer {stack.config.review_key('org2')}"}
    deadline = time.monotonic() + 60
    while True:
        written = httpx.get(
            f"{stack.urls['writeback']}/v1/orgs/org2/drafts", params={"status": "written"}, headers=headers
        ).json()["drafts"]
        if any(d["patient"] == low for d in written) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    [auto] = [d for d in written if d["patient"] == low]
    assert auto["reviewer"] == "Device/ehrflow-auto-approval"
    assert len(modes["org2"].search("RiskAssessment", _tag=f"{SYSTEM_DRAFT}|{drafts[low]['draft_id']}")) == 1
    pending = httpx.get(
        f"{stack.urls['writeback']}/v1/orgs/org2/drafts", params={"status": "pending"}, headers=headers
    ).json()["drafts"]
    assert high in {d["patient"] for d in pending}
    assert modes["org2"].search("RiskAssessment", _tag=f"{SYSTEM_DRAFT}|{drafts[high]['draft_id']}") == []
