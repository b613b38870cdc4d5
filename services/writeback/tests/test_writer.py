"""What writeback writes: final, tagged, AI-labelled resources with Provenance; conditional creates."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ehrflow_contracts import DraftProposed, ModelRef
from ehrflow_contracts.fhir import SYSTEM_DRAFT, SYSTEM_TAG, TAG_GENERATED, is_generated_by_ehrflow
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_runtime.organizations import Organization
from ehrflow_writeback.writer import final_resource, provenance, write_approved

DECIDED = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
DRAFT = DraftProposed(
    organization_id="org1",
    correlation_id="c",
    draft_id="d" * 32,
    workflow="news2",
    model=ModelRef(name="ehrflow-news2", version="1.0.0"),
    patient="Patient/p1",
    resource={
        "resourceType": "RiskAssessment",
        "status": "preliminary",
        "subject": {"reference": "Patient/p1"},
        "meta": {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST"}]
        },
    },
    basis=("Observation/a/_history/1", "Observation/b/_history/2"),
)


def test_final_resource_is_tagged_and_labelled() -> None:
    ra = final_resource(DRAFT)
    assert ra["status"] == "final" and "id" not in ra
    assert is_generated_by_ehrflow(ra)
    assert {"system": SYSTEM_DRAFT, "code": DRAFT.draft_id} in ra["meta"]["tag"]
    assert [s["code"] for s in ra["meta"]["security"]] == ["AIAST"]
    assert DRAFT.resource["status"] == "preliminary"  # the draft itself is not modified


def test_provenance_names_model_reviewer_and_sources() -> None:
    prov = provenance(DRAFT, "RiskAssessment/r1", "Practitioner/nurse-7", DECIDED)
    assert prov["target"] == [{"reference": "RiskAssessment/r1"}]
    author, verifier = prov["agent"]
    assert author["type"]["coding"][0]["code"] == "author"
    assert author["who"]["identifier"]["value"] == "ehrflow-news2@1.0.0"
    assert verifier["type"]["coding"][0]["code"] == "verifier" and verifier["who"] == {
        "reference": "Practitioner/nurse-7"
    }
    assert [e["what"]["reference"] for e in prov["entity"]] == list(DRAFT.basis)
    assert {"system": SYSTEM_TAG, "code": TAG_GENERATED} in prov["meta"]["tag"]


async def test_writes_are_conditional_on_the_draft_tag(organization: Organization) -> None:
    ehr = MockFhir()
    fhir = ehr.client(organization, service="writeback")
    written = await write_approved(fhir, DRAFT, "Practitioner/nurse-7", DECIDED)
    posts = [r for r in ehr.requests if r.method == "POST" and "/fhir/" in str(r.url)]
    assert [p.url.path for p in posts] == ["/fhir/RiskAssessment", "/fhir/Provenance"]
    assert all(p.headers["if-none-exist"] == f"_tag={SYSTEM_DRAFT}|{DRAFT.draft_id}" for p in posts)
    assert json.loads(posts[1].content)["target"] == [{"reference": written.resource}]


SUMMARY_DRAFT = DRAFT.model_copy(
    update={
        "workflow": "tumor-board",
        "resource": {
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "preliminary",
            "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"contentType": "text/markdown", "data": "LSBkcmFmdGVk"}}],  # "- drafted"
        },
    }
)


def test_an_edit_replaces_the_drafted_text_and_the_provenance_says_the_reviewer_revised_it() -> None:
    from base64 import b64decode

    from ehrflow_writeback.writer import editable_text

    assert editable_text(SUMMARY_DRAFT.resource) == "- drafted"
    doc = final_resource(SUMMARY_DRAFT, "- revised by the clinician")
    assert b64decode(doc["content"][0]["attachment"]["data"]).decode() == "- revised by the clinician"
    assert doc["docStatus"] == "final"
    prov = provenance(SUMMARY_DRAFT, "DocumentReference/x", "Practitioner/dr-1", DECIDED, edited=True)
    agents = {(a["type"]["coding"][0]["code"], a["who"].get("reference")) for a in prov["agent"]}
    assert {("verifier", "Practitioner/dr-1"), ("author", "Practitioner/dr-1")} <= agents
    revised = [e for e in prov["entity"] if e["role"] == "revision"]
    assert revised and revised[0]["what"]["identifier"]["value"] == SUMMARY_DRAFT.draft_id
    unedited = provenance(SUMMARY_DRAFT, "DocumentReference/x", "Practitioner/dr-1", DECIDED)
    assert all(e["role"] == "source" for e in unedited["entity"])
    assert ("author", "Practitioner/dr-1") not in {
        (a["type"]["coding"][0]["code"], a["who"].get("reference")) for a in unedited["agent"]
    }


def test_a_score_has_no_text_to_edit() -> None:
    import pytest

    from ehrflow_writeback.writer import NotEditable, editable_text

    assert editable_text(DRAFT.resource) is None
    with pytest.raises(NotEditable):
        final_resource(DRAFT, "a number rewritten")
