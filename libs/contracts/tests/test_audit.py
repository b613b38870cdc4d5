"""Audit records as FHIR AuditEvents: valid by the pinned FHIR models for every kind of action, BALP's
type/subtype/action/profile per kind, references only, the same event after a trip through JSON."""

from __future__ import annotations

import json

import pytest

from ehrflow_contracts import AuditRecorded
from ehrflow_contracts.audit import BALP, SYSTEM_AUDIT_RECORD, kind_of
from ehrflow_contracts.fhir import SYSTEM_DRAFT, validate


def _record(action: str, outcome: str = "success", **fields: object) -> AuditRecorded:
    values: dict[str, object] = {
        "organization_id": "org1",
        "correlation_id": "c",
        "action": action,
        "outcome": outcome,
        "actor": "Practitioner/dr-1",
        "source": "writeback",
        **fields,
    }
    return AuditRecorded.model_validate(values)


@pytest.mark.parametrize(
    ("action", "type_code", "subtype", "code", "profile"),
    [
        ("session.started", "110114", "110122", "E", None),
        ("token.issued", "110114", "110122", "E", None),
        ("launch.callback-failed", "110114", "110122", "E", None),
        ("review.viewed", "rest", "read", "R", "PatientRead"),
        ("review.decided", "rest", "update", "U", "PatientUpdate"),
        ("review.refused", "rest", "update", "U", "PatientUpdate"),
        ("draft.written", "rest", "create", "C", "PatientCreate"),
        ("draft.write-failed", "rest", "create", "C", "PatientCreate"),
        ("keys.rotated", "110100", None, "E", None),
    ],
)
def test_each_kind_of_action_is_a_valid_audit_event_of_its_pattern(
    action: str, type_code: str, subtype: str | None, code: str, profile: str | None
) -> None:
    event = validate(_record(action, patient="Patient/p1", drafts=("d1",), details={"k": "v"}).audit_event)
    assert event["type"]["code"] == type_code
    assert [s["code"] for s in event.get("subtype", [])] == ([subtype] if subtype else [])
    assert event["action"] == code
    assert event["meta"].get("profile") == ([BALP + profile] if profile else None)


def test_without_a_patient_the_profile_is_the_plain_pattern() -> None:
    assert _record("draft.written").audit_event["meta"]["profile"] == [BALP + "Create"]


def test_outcomes_tell_a_refusal_from_a_failed_write() -> None:
    assert _record("review.viewed").audit_event["outcome"] == "0"
    assert _record("review.refused", "failure").audit_event["outcome"] == "4"
    assert _record("draft.write-failed", "failure").audit_event["outcome"] == "8"


def test_entities_are_references_and_identifiers_only() -> None:
    record = _record(
        "draft.written",
        patient="Patient/p1",
        drafts=("d1",),
        entities=("RiskAssessment/r1", "Provenance/v1"),
        details={"attempts": 1, "reason_code": None},
    )
    event = validate(record.audit_event)
    assert [e["what"] for e in event["entity"]] == [
        {"reference": "Patient/p1"},
        {"reference": "RiskAssessment/r1"},
        {"reference": "Provenance/v1"},
        {"identifier": {"system": SYSTEM_DRAFT, "value": "d1"}, "display": "ehrflow draft"},
    ]
    assert [e["role"]["code"] for e in event["entity"]] == ["1", "4", "4", "4"]
    # Details ride on the first data entity; a None is left out, never written as "None".
    assert event["entity"][1]["detail"] == [{"type": "attempts", "valueString": "1"}]
    assert {"system": SYSTEM_AUDIT_RECORD, "code": record.event_id} in event["meta"]["tag"]


def test_a_service_or_unknown_caller_is_the_source_role_and_a_clinician_a_reference() -> None:
    service = _record("token.issued", actor="inference").audit_event["agent"][0]
    assert service["who"] == {"display": "inference"} and service["type"]["coding"][0]["code"] == "110153"
    clinician = _record("review.viewed").audit_event["agent"][0]
    assert clinician == {"requestor": True, "who": {"reference": "Practitioner/dr-1"}}


def test_a_record_without_data_entities_keeps_its_details() -> None:
    event = validate(_record("keys.rotated", actor="auth", details={"kid": "k2"}).audit_event)
    assert event["entity"] == [
        {
            "what": {"display": "keys.rotated"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
            "detail": [{"type": "kid", "valueString": "k2"}],
        }
    ]


def test_the_event_survives_the_topic() -> None:
    record = _record("review.decided", patient="Patient/p1", drafts=("d1",))
    sent = json.loads(record.model_dump_json())
    assert sent["audit_event"] == record.audit_event
    assert AuditRecorded.model_validate(sent).audit_event == record.audit_event


@pytest.mark.parametrize(("action", "kind"), [("session.ended", "login"), ("review.viewed", "read"), ("x", "activity")])
def test_kinds(action: str, kind: str) -> None:
    assert kind_of(action) == kind
