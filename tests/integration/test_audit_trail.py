"""The audit trail on the stack's real parts (broker, Redis, auth, writeback, the sandbox EHRs): a view, a
decision and a write of a draft are each an ``AuditRecorded`` on the audit topic carrying a valid FHIR
AuditEvent (IHE BALP style) with references only; organization 1, which asks for copies, has each of its
records in its EHR exactly once; organization 2, which does not, has none anywhere, and none of its records
reaches organization 1's EHR."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ehrflow_contracts import DraftProposed, topics
from ehrflow_contracts.audit import SYSTEM_AUDIT_RECORD
from ehrflow_contracts.fhir import SYSTEM_DRAFT, validate
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.kafka_read import publish_events, wait_for_records
from ehrflow_devstack.processes import wait_until
from ehrflow_devstack.scenario import Ehr
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
REVIEWER = "Practitioner/dr-audit"


def _api(stack: Stack, draft: DraftProposed, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
    assert stack.config
    return httpx.request(
        method,
        f"{stack.urls['writeback']}/v1/orgs/{draft.organization_id}/drafts/{draft.draft_id}{path}",
        headers={"Authorization": f"Bearer {stack.config.review_key(draft.organization_id)}"},
        timeout=20,
        **kwargs,
    )


def _status(stack: Stack, draft: DraftProposed) -> str:
    answer = _api(stack, draft, "GET")
    return str(answer.json().get("status")) if answer.status_code == 200 else f"http {answer.status_code}"


def test_views_decisions_and_writes_are_audit_events_copied_to_the_ehr_that_asks(stack: Stack) -> None:
    assert stack.broker and stack.config
    ours = news2_draft("org1", "Patient/audit-1")
    theirs = news2_draft("org2", "Patient/audit-2")
    asyncio.run(publish_events(stack.broker.url, topics.DRAFT_PROPOSED, [ours, theirs]))
    for draft in (ours, theirs):
        wait_until("the drafts are queued", lambda d=draft: _status(stack, d) == "pending", 60)  # type: ignore[misc]
        assert _api(stack, draft, "POST", "/approve", json={"reviewer": REVIEWER}).status_code == 202
        wait_until("the drafts are written", lambda d=draft: _status(stack, d) == "written", 60)  # type: ignore[misc]

    wanted = {"review.viewed", "review.decided", "draft.written"}

    def about(draft: DraftProposed) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        return lambda records: [r for r in records if draft.draft_id in r.get("drafts", [])]

    records = wait_for_records(
        stack.broker.url,
        topics.AUDIT,
        lambda rs: (
            wanted <= {r["action"] for r in about(ours)(rs)} and wanted <= {r["action"] for r in about(theirs)(rs)}
        ),
        timeout=60,
    )
    mine = {r["action"]: r for r in about(ours)(records)}
    for action, record in mine.items():
        event = record["audit_event"]
        assert validate(event)["resourceType"] == "AuditEvent", action
        assert event["source"]["site"] == "org1" and event["source"]["observer"]["display"] == "ehrflow writeback"
        requestor = [a["who"] for a in event["agent"] if a["requestor"]]
        # A review-key client names its reviewer when it decides; its views are the client's own.
        assert requestor == ([{"display": "review-key"}] if action == "review.viewed" else [{"reference": REVIEWER}])
        whats = [e["what"] for e in event["entity"]]
        assert {"reference": "Patient/audit-1"} in whats
        assert {"system": SYSTEM_DRAFT, "value": ours.draft_id} in [w.get("identifier") for w in whats]
    assert mine["review.viewed"]["audit_event"]["meta"]["profile"] == [BALP + "PatientRead"]
    assert mine["review.decided"]["audit_event"]["meta"]["profile"] == [BALP + "PatientUpdate"]
    written = mine["draft.written"]
    assert written["audit_event"]["meta"]["profile"] == [BALP + "PatientCreate"]
    resource, provenance = written["entities"]
    assert resource.startswith("RiskAssessment/") and provenance.startswith("Provenance/")
    assert mine["review.decided"]["details"] == {
        "decision": "approved",
        "workflow": "news2",
        "reason_code": None,
        "edited": "no",
    }

    org1 = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    org2 = Ehr(stack.ehrs["org2"].url, stack.config.admin_token)
    try:

        def copies(ehr: Ehr, record: dict[str, Any]) -> list[dict[str, Any]]:
            return ehr.search("AuditEvent", _tag=f"{SYSTEM_AUDIT_RECORD}|{record['event_id']}")

        wait_until("organization 1's EHR has its copies", lambda: all(copies(org1, r) for r in mine.values()), 60)
        for action, record in mine.items():
            [copy] = copies(org1, record)  # exactly one, however often the record was delivered
            assert copy["action"] == record["audit_event"]["action"], action
            assert copy["outcomeDesc"] == action
        for record in about(theirs)(records):
            assert copies(org1, record) == [], "organization 2's audit record reached organization 1's EHR"
            assert copies(org2, record) == [], "organization 2 asked for no copies"
    finally:
        org1.close()
        org2.close()
