"""The NEWS2 workflow from event to draft, against an in-memory FHIR API (httpx.MockTransport)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ehrflow_contracts import DraftProposed, InferenceOutcome, NotificationReceived
from ehrflow_contracts.events import Reference
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.scenario import Vitals, panel, vital_observations
from ehrflow_inference import service
from ehrflow_inference.vitals import readings
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import News2Workflow, Organization

WHEN = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
CONTRACT = News2Workflow()


def _chart(ehr: MockFhir, vitals: Vitals, patient: str = "Patient/p1", when: datetime = WHEN) -> dict:  # type: ignore[type-arg]
    observations = vital_observations(patient, vitals, (when - timedelta(minutes=2)).isoformat())
    ehr.add(*observations)
    trigger = panel(patient, [f"Observation/{o['id']}" for o in observations], when.isoformat())
    ehr.add(trigger)
    return trigger


def _event(trigger: dict, *, full: bool = True) -> NotificationReceived:  # type: ignore[type-arg]
    ref = f"Observation/{trigger['id']}"
    return NotificationReceived(
        organization_id="org1",
        correlation_id="c",
        flavour="r4-backport",
        notification_type="event-notification",
        content_level="full-resource" if full else "id-only",
        focus=Reference(reference=ref, original=ref),
        resource=trigger if full else None,
        patient=trigger["subject"]["reference"],
        dedupe_key="k",
    )


def _fhir(ehr: MockFhir, org: Organization) -> FhirClient:
    return ehr.client(org)


HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)


async def test_high_risk_draft(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = _chart(ehr, HIGH)
    draft = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(draft, DraftProposed)
    assert (draft.summary["score"], draft.summary["band"], draft.patient) == (13, "high", "Patient/p1")
    ra = draft.resource
    assert ra["resourceType"] == "RiskAssessment" and ra["status"] == "preliminary"
    assert ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert ra["meta"]["security"][0]["code"] == "AIAST"
    assert len(draft.basis) == 7 and all("/_history/1" in b for b in draft.basis)
    assert {b["reference"] for b in ra["basis"]} == set(draft.basis)


async def test_id_only_event_reads_the_trigger(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = _chart(ehr, HIGH)
    draft = await service.handle(_event(trigger, full=False), CONTRACT, _fhir(ehr, organization))
    assert isinstance(draft, DraftProposed)
    assert any(r.url.path.endswith(f"/Observation/{trigger['id']}") for r in ehr.requests)


async def test_same_inputs_same_draft_id(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = _chart(ehr, HIGH)
    first = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    again = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(first, DraftProposed) and isinstance(again, DraftProposed)
    assert first.draft_id == again.draft_id


async def test_missing_parameter_is_insufficient_data(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = _chart(ehr, Vitals(18, 96, 0, 135, 80, None, 36.8))
    outcome = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(outcome, InferenceOutcome)
    assert (outcome.outcome, outcome.missing, outcome.patient) == (
        "insufficient-data",
        ("consciousness",),
        "Patient/p1",
    )


async def test_vitals_older_than_the_window_do_not_count(organization: Organization) -> None:
    ehr = MockFhir()
    old = vital_observations("Patient/p1", HIGH, (WHEN - timedelta(hours=30)).isoformat())
    ehr.add(*old)
    trigger = panel("Patient/p1", [], WHEN.isoformat())
    ehr.add(trigger)
    outcome = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(outcome, InferenceOutcome) and len(outcome.missing) == 7


async def test_latest_reading_wins(organization: Organization) -> None:
    ehr = MockFhir()
    _chart(ehr, HIGH, when=WHEN - timedelta(hours=1))
    trigger = _chart(ehr, Vitals(16, 97, 0, 128, 72, "A", 37.0))
    draft = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(draft, DraftProposed) and draft.summary["score"] == 0


async def test_scale2_condition(organization: Organization) -> None:
    ehr = MockFhir()
    ehr.add(
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "https://ehrflow.dev/fhir/CodeSystem/news2", "code": "spo2-scale-2"}]},
        }
    )
    trigger = _chart(ehr, Vitals(16, 89, 0, 128, 72, "A", 37.0))
    draft = await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    assert isinstance(draft, DraftProposed)
    assert (draft.summary["spo2_scale"], draft.summary["score"]) == (2, 0)


async def test_non_trigger_observations_are_ignored(organization: Organization) -> None:
    ehr = MockFhir()
    [single] = vital_observations("Patient/p1", Vitals(16, None, None, None, None, None, None), WHEN.isoformat())
    ehr.add(single)
    assert await service.handle(_event(single), CONTRACT, _fhir(ehr, organization)) is None


async def test_forbidden_and_unavailable_ehr(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = _chart(ehr, HIGH)
    ehr.fail_next = [403]
    with pytest.raises(UpstreamRejected):
        await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))
    ehr.fail_next = [503]
    with pytest.raises(UpstreamUnavailable):
        await service.handle(_event(trigger), CONTRACT, _fhir(ehr, organization))


def test_bp_panel_component_and_fahrenheit() -> None:
    bp = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "effectiveDateTime": WHEN.isoformat(),
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 118, "code": "mm[Hg]"},
            }
        ],
    }
    temp = {
        "resourceType": "Observation",
        "id": "t",
        "status": "final",
        "effectiveDateTime": WHEN.isoformat(),
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "valueQuantity": {"value": 100.4, "code": "[degF]"},
    }
    assert [(r.parameter, r.value) for r in readings(bp)] == [("systolic_bp", 118)]
    [reading] = readings(temp)
    assert reading.parameter == "temperature" and reading.value == pytest.approx(38.0)


def test_entered_in_error_is_not_a_reading() -> None:
    obs = {
        "resourceType": "Observation",
        "id": "x",
        "status": "entered-in-error",
        "effectiveDateTime": WHEN.isoformat(),
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 70},
    }
    assert readings(obs) == []
