"""The reference scenario end to end on the real stack (broker, Redis, two SEKMET organizations)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis

from ehrflow_contracts import ReviewDecided, topics
from ehrflow_contracts.fhir import SYSTEM_DRAFT
from ehrflow_devstack.config import ORGS
from ehrflow_devstack.demo import ScenarioResult, report, run_scenario
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.scenario import Ehr, cases
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

SERVICES = ("auth", "ingest", "inference", "writeback")


@pytest.fixture(scope="module")
def scenario(stack: Stack) -> ScenarioResult:
    return run_scenario(stack, say=lambda _: None)


@pytest.fixture(scope="module")
def ehrs(stack: Stack) -> Iterator[dict[str, Ehr]]:
    assert stack.config
    clients = {o.id: Ehr(stack.ehrs[o.id].url, stack.config.admin_token) for o in ORGS}
    yield clients
    for c in clients.values():
        c.close()


def test_scenario_matches(scenario: ScenarioResult) -> None:
    assert scenario.ok, report(scenario)


def test_high_risk_assessment_is_in_org1_and_absent_from_org2(scenario: ScenarioResult, ehrs: dict[str, Ehr]) -> None:
    org1 = scenario.orgs["org1"]
    [high] = [d for d in org1.written if d["workflow"] == "news2" and d["summary"]["band"] == "high"]
    tag = f"{SYSTEM_DRAFT}|{high['draft_id']}"
    [ra] = ehrs["org1"].search("RiskAssessment", _tag=tag)
    assert ra["status"] == "final" and ra["subject"]["reference"] == high["patient"]
    assert ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert [s["code"] for s in ra["meta"]["security"]] == ["AIAST"]
    [prov] = ehrs["org1"].search("Provenance", _tag=tag)
    assert prov["target"] == [{"reference": f"RiskAssessment/{ra['id']}"}]
    assert {a["type"]["coding"][0]["code"] for a in prov["agent"]} == {"author", "verifier"}
    assert ehrs["org2"].search("RiskAssessment", _tag=tag) == []
    assert ehrs["org2"].search("Provenance", _tag=tag) == []


def _news2(scenario: ScenarioResult, org: str) -> list[dict[str, Any]]:
    return [d for d in scenario.orgs[org].written if d["workflow"] == "news2"]


@pytest.mark.parametrize("org", ["org1", "org2"])
def test_model_workflows_write_their_outputs_to_their_own_ehr(
    scenario: ScenarioResult, ehrs: dict[str, Ehr], org: str
) -> None:
    written = {d["workflow"]: d for d in scenario.orgs[org].written if d["workflow"] != "news2"}
    assert set(written) == {"readmission", "tumor-board"}
    other = ehrs["org2" if org == "org1" else "org1"]
    summary_tag = f"{SYSTEM_DRAFT}|{written['tumor-board']['draft_id']}"
    [document] = ehrs[org].search("DocumentReference", _tag=summary_tag)
    assert document["docStatus"] == "final" and [s["code"] for s in document["meta"]["security"]] == ["AIAST"]
    assert document["subject"]["reference"] == written["tumor-board"]["patient"]
    text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
    cited = {r["reference"] for r in document["context"]["related"]}
    assert text.startswith("- ") and cited and all(c in text for c in cited)
    [risk] = ehrs[org].search("RiskAssessment", _tag=f"{SYSTEM_DRAFT}|{written['readmission']['draft_id']}")
    assert 0 < risk["prediction"][0]["probabilityDecimal"] < 1 and risk["status"] == "final"
    assert risk["subject"]["reference"] == written["readmission"]["patient"]
    for tag in (summary_tag, f"{SYSTEM_DRAFT}|{written['readmission']['draft_id']}"):
        [provenance] = ehrs[org].search("Provenance", _tag=tag)
        assert {a["type"]["coding"][0]["code"] for a in provenance["agent"]} == {"author", "verifier"}
        assert other.search("Provenance", _tag=tag) == []


def test_redelivered_approval_does_not_write_twice(
    stack: Stack, scenario: ScenarioResult, ehrs: dict[str, Ehr]
) -> None:
    assert stack.config
    draft = _news2(scenario, "org2")[0]
    again = httpx.post(
        f"{stack.urls['writeback']}/v1/orgs/org2/drafts/{draft['draft_id']}/approve",
        json={"reviewer": "Practitioner/other"},
        headers={"Authorization": f"Bearer {stack.config.review_key('org2')}"},
    )
    assert again.status_code == 409
    assert len(ehrs["org2"].search("RiskAssessment", _tag=f"{SYSTEM_DRAFT}|{draft['draft_id']}")) == 1


async def test_redelivered_decision_after_a_crash_writes_once(
    stack: Stack, scenario: ScenarioResult, ehrs: dict[str, Ehr]
) -> None:
    """Writeback crashed after writing but before recording it; Kafka redelivers the decision."""
    assert stack.redis and stack.broker and stack.config
    draft = _news2(scenario, "org1")[-1]
    redis = Redis.from_url(stack.redis.url)
    queue = stack.config.review_queue(redis)
    assert await queue.transition("org1", draft["draft_id"], "written", "approved") == (True, "approved")
    broker = KafkaBroker(stack.broker.url)
    async with broker:
        await broker.publish(
            ReviewDecided(
                organization_id="org1",
                correlation_id="redelivery",
                draft_id=draft["draft_id"],
                decision="approved",
                reviewer="Practitioner/org1-ward-sister",
                decided_at=datetime.now(UTC),
            ),
            topic=topics.REVIEW_DECIDED,
        )
    for _ in range(120):
        queued = await queue.get("org1", draft["draft_id"])
        if queued and queued.status == "written":
            break
        await asyncio.sleep(0.5)
    await redis.aclose()
    assert queued is not None and queued.status == "written"
    assert queued.fields["resource_ref"] == draft["resource_ref"]
    tag = f"{SYSTEM_DRAFT}|{draft['draft_id']}"
    assert len(ehrs["org1"].search("RiskAssessment", _tag=tag)) == 1
    assert len(ehrs["org1"].search("Provenance", _tag=tag)) == 1


def test_review_api_keeps_organizations_apart(stack: Stack, scenario: ScenarioResult) -> None:
    assert stack.config
    base = f"{stack.urls['writeback']}/v1/orgs"
    org1_key = {"Authorization": f"Bearer {stack.config.review_key('org1')}"}
    org1_draft = scenario.orgs["org1"].written[0]["draft_id"]
    assert httpx.get(f"{base}/org2/drafts", headers=org1_key).status_code == 401
    assert (
        httpx.post(
            f"{base}/org2/drafts/{org1_draft}/approve", headers=org1_key, json={"reviewer": "Practitioner/x"}
        ).status_code
        == 401
    )
    org2_key = {"Authorization": f"Bearer {stack.config.review_key('org2')}"}
    assert httpx.get(f"{base}/org2/drafts/{org1_draft}", headers=org2_key).status_code == 404
    assert httpx.get(f"{base}/org1/drafts/{org1_draft}", headers=org1_key).status_code == 200


def _secrets(stack: Stack) -> dict[str, str]:
    """Everything that must never appear in a log: names, birth dates, tokens, keys, secrets."""
    assert stack.config
    found: dict[str, str] = {}
    for org in ORGS:
        for case in cases(org.id):
            found[f"{org.id} {case.key} given name"] = case.given
            found[f"{org.id} {case.key} family name"] = case.family
            found[f"{org.id} {case.key} birth date"] = case.birth_date
        found[f"{org.id} webhook secret"] = stack.config.webhook_secret(org.id)
        found[f"{org.id} review key"] = stack.config.review_key(org.id)
        token = httpx.post(
            f"{stack.urls['auth']}/internal/v1/tokens",
            json={"organization": org.id, "feature": "news2"},
            headers={
                "Authorization": f"Bearer {stack.config.service_credential('inference')}",
                "X-Ehrflow-Service": "inference",
            },
        ).json()["access_token"]
        found[f"{org.id} access token"] = token
        pem = (stack.config.folder / "keys" / f"{org.id}.pem").read_text().splitlines()
        found[f"{org.id} private key"] = pem[1]
    for service in ("inference", "writeback", "ingest"):
        found[f"{service} credential"] = stack.config.service_credential(service)
    found["EHR admin token"] = stack.config.admin_token
    return found


def test_service_logs_carry_no_phi_tokens_or_keys(stack: Stack, scenario: ScenarioResult) -> None:
    assert scenario.orgs["org1"].written  # the logs below cover a whole scenario
    logs = {name: (stack.logs / f"{name}.log").read_text() for name in SERVICES}
    assert all(logs.values()), "every service wrote a log"
    assert sum(text.count("\n") for text in logs.values()) > 20
    assert stack.broker
    audit = json.dumps(read_topic(stack.broker.url, topics.AUDIT))
    assert '"token.issued"' in audit
    logs["audit topic"] = audit
    leaks = [
        f"{what} in {name}.log"
        for what, value in _secrets(stack).items()
        for name, text in logs.items()
        if value in text
    ]
    assert leaks == []
    for name, text in logs.items():
        assert not re.search(r"BEGIN (RSA |EC )?PRIVATE KEY", text), name
        assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.", text), f"a JWT in {name}.log"


def test_logs_are_json_lines(stack: Stack, scenario: ScenarioResult) -> None:

    for name in SERVICES:
        for line in Path(stack.logs / f"{name}.log").read_text().splitlines():
            record = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= set(record)
