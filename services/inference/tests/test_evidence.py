"""Inputs as a reviewer reads them: label, value with unit, and when."""

from __future__ import annotations

from datetime import UTC, datetime

from ehrflow_inference.evidence import describe, describe_all


def test_a_quantity_keeps_its_unit_and_time() -> None:
    e = describe(
        {
            "resourceType": "Observation",
            "id": "rr",
            "meta": {"versionId": "3"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1", "display": "Respiratory rate"}]},
            "valueQuantity": {"value": 22, "unit": "/min"},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
        }
    )
    assert (e.reference, e.label, e.value, e.unit) == ("Observation/rr/_history/3", "Respiratory rate", "22", "/min")
    assert e.when == datetime(2026, 11, 20, 8, tzinfo=UTC)


def test_a_panel_joins_its_components_and_other_types_read_naturally() -> None:
    bp = describe(
        {
            "resourceType": "Observation",
            "id": "bp",
            "code": {"text": "Blood pressure"},
            "component": [
                {"code": {"text": "Systolic"}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                {"code": {"text": "Diastolic"}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"}},
            ],
        }
    )
    assert bp.value == "Systolic 120 mm[Hg]; Diastolic 80 mm[Hg]" and bp.when is None
    oxygen = describe({"resourceType": "Observation", "id": "o2", "code": {"text": "On oxygen"}, "valueBoolean": True})
    assert oxygen.value == "yes"
    stay = describe(
        {
            "resourceType": "Encounter",
            "id": "e",
            "status": "finished",
            "class": {"code": "IMP", "display": "inpatient encounter"},
            "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-05T00:00:00Z"},
        }
    )
    assert (stay.label, stay.value, stay.when) == ("inpatient encounter", "finished", datetime(2026, 11, 5, tzinfo=UTC))
    condition = describe(
        {"resourceType": "Condition", "id": "c", "code": {"text": "COPD"}, "clinicalStatus": {"text": "active"}}
    )
    assert (condition.label, condition.value) == ("COPD", "active")


def test_each_input_once_oldest_first() -> None:
    a = {"resourceType": "Observation", "id": "a", "code": {"text": "A"}, "effectiveDateTime": "2026-11-02T00:00:00Z"}
    b = {"resourceType": "Observation", "id": "b", "code": {"text": "B"}, "effectiveDateTime": "2026-11-01T00:00:00Z"}
    assert [e.reference for e in describe_all([a, b, a])] == ["Observation/b", "Observation/a"]
