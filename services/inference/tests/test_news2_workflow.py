"""The NEWS2 workflow from event to draft through the pipeline, against an in-memory FHIR API
(httpx.MockTransport)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ehrflow_contracts import DraftProposed, InferenceOutcome, NotificationReceived
from ehrflow_devstack.mock_fhir import MockFhir, event_about
from ehrflow_devstack.scenario import Vitals, panel, vital_observations
from ehrflow_inference.contract import Contract
from ehrflow_inference.enabled import Enabled, contract_for
from ehrflow_inference.models import Models
from ehrflow_inference.pipeline import WorkflowUnavailable, evaluate
from ehrflow_inference.workflows.news2 import News2
from ehrflow_inference.workflows.news2.vitals import readings
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization

WHEN = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NEWS2 = News2()
CONTRACT = contract_for(NEWS2, {}, source=NEWS2.contract_file, org=None)


async def _handle(
    ehr: MockFhir, org: Organization, event: NotificationReceived, contract: Contract = CONTRACT
) -> DraftProposed | InferenceOutcome | None:
    """What the pipeline publishes for ``event`` with the NEWS2 contract alone: one event, or None."""
    results = await evaluate(event, [Enabled(NEWS2, contract)], lambda feature: ehr.client(org, feature), Models())
    assert len(results) <= 1
    return results[0].event if results else None


HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)


async def test_high_risk_draft(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    draft = await _handle(ehr, organization, event_about(trigger))
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
    trigger = ehr.chart_vitals(HIGH, WHEN)
    draft = await _handle(ehr, organization, event_about(trigger, full=False))
    assert isinstance(draft, DraftProposed)
    assert any(r.url.path.endswith(f"/Observation/{trigger['id']}") for r in ehr.requests)


async def test_same_inputs_same_draft_id(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    first = await _handle(ehr, organization, event_about(trigger))
    again = await _handle(ehr, organization, event_about(trigger))
    assert isinstance(first, DraftProposed) and isinstance(again, DraftProposed)
    assert first.draft_id == again.draft_id


async def test_missing_parameter_is_insufficient_data(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(Vitals(18, 96, 0, 135, 80, None, 36.8), WHEN)
    outcome = await _handle(ehr, organization, event_about(trigger))
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
    outcome = await _handle(ehr, organization, event_about(trigger))
    assert isinstance(outcome, InferenceOutcome) and len(outcome.missing) == 7


async def test_latest_reading_wins(organization: Organization) -> None:
    ehr = MockFhir()
    ehr.chart_vitals(HIGH, WHEN - timedelta(hours=1))
    trigger = ehr.chart_vitals(Vitals(16, 97, 0, 128, 72, "A", 37.0), WHEN)
    draft = await _handle(ehr, organization, event_about(trigger))
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
    trigger = ehr.chart_vitals(Vitals(16, 89, 0, 128, 72, "A", 37.0), WHEN)
    draft = await _handle(ehr, organization, event_about(trigger))
    assert isinstance(draft, DraftProposed)
    assert (draft.summary["spo2_scale"], draft.summary["score"]) == (2, 0)


async def test_non_trigger_observations_are_ignored(organization: Organization) -> None:
    ehr = MockFhir()
    [single] = vital_observations("Patient/p1", Vitals(16, None, None, None, None, None, None), WHEN.isoformat())
    ehr.add(single)
    assert await _handle(ehr, organization, event_about(single)) is None


async def test_refusals_are_outcomes_and_outages_are_raised(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    ehr.fail_next = [403]
    forbidden = await _handle(ehr, organization, event_about(trigger))
    assert isinstance(forbidden, InferenceOutcome) and forbidden.outcome == "forbidden"
    assert forbidden.missing == ("system/Observation.read",) and "input 'vitals'" in forbidden.detail
    ehr.fail_next = [404]
    gone = await _handle(ehr, organization, event_about(trigger, full=False))
    assert isinstance(gone, InferenceOutcome) and gone.outcome == "not-found"
    ehr.fail_next = [400]
    with pytest.raises(UpstreamRejected):
        await _handle(ehr, organization, event_about(trigger))
    ehr.fail_next = [503]
    with pytest.raises(WorkflowUnavailable) as outage:
        await _handle(ehr, organization, event_about(trigger))
    assert isinstance(outage.value.__cause__, UpstreamUnavailable) and outage.value.reason == "ehr-unavailable"
    assert outage.value.workflow == "news2"


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
    assert [(r.parameter, r.value) for r in readings(bp, CONTRACT)] == [("systolic_bp", 118)]
    [reading] = readings(temp, CONTRACT)
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
    assert readings(obs, CONTRACT) == []
