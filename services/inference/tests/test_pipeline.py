"""What the pipeline adds around a workflow: review policy, staleness, budget, mapping, outcomes, debounce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ehrflow_contracts import DraftProposed, InferenceOutcome, NotificationReceived
from ehrflow_devstack.mock_fhir import MockFhir, event_about
from ehrflow_devstack.scenario import Vitals, panel
from ehrflow_inference.enabled import Enabled, contract_for
from ehrflow_inference.models import Models
from ehrflow_inference.pipeline import Result, evaluate
from ehrflow_inference.workflows.news2 import News2
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Organization

WHEN = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NEWS2 = News2()
HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)
NORMAL = Vitals(16, 97, 0, 128, 72, "A", 37.0)


async def _run(
    ehr: MockFhir, org: Organization, event: NotificationReceived, override: dict[str, Any], **kwargs: Any
) -> list[Result]:
    contract = contract_for(NEWS2, override, source=NEWS2.contract_file, org=None)
    return await evaluate(event, [Enabled(NEWS2, contract)], lambda f: ehr.client(org, f), Models(), **kwargs)


def _one(results: list[Result]) -> Result:
    assert len(results) == 1, results
    return results[0]


async def test_required_review_drafts_with_the_workflow_feature_and_expiry(organization: Organization) -> None:
    ehr = MockFhir()
    result = _one(await _run(ehr, organization, event_about(ehr.chart_vitals(HIGH, WHEN)), {}, now=lambda: WHEN))
    assert result.kind == "draft" and isinstance(result.event, DraftProposed)
    draft = result.event
    assert (draft.feature, draft.auto_approve, draft.model.name) == ("news2", False, "ehrflow-news2")
    assert draft.expires_at == WHEN + timedelta(hours=24)


@pytest.mark.parametrize(("vitals", "auto"), [(NORMAL, True), (HIGH, False)])
async def test_auto_approval_only_where_the_condition_holds(
    organization: Organization, vitals: Vitals, auto: bool
) -> None:
    ehr = MockFhir()
    review = {"review": {"mode": "auto-approve", "when": {"field": "band", "one_of": ["low"]}}}
    result = _one(await _run(ehr, organization, event_about(ehr.chart_vitals(vitals, WHEN)), review))
    assert result.kind == "draft" and isinstance(result.event, DraftProposed)
    assert result.event.auto_approve is auto


async def test_shadow_drafts_go_to_the_shadow_channel(organization: Organization) -> None:
    ehr = MockFhir()
    result = _one(
        await _run(ehr, organization, event_about(ehr.chart_vitals(HIGH, WHEN)), {"review": {"mode": "shadow"}})
    )
    assert result.kind == "shadow" and isinstance(result.event, DraftProposed)


async def test_a_newer_vital_signs_set_supersedes_the_trigger(organization: Organization) -> None:
    ehr = MockFhir()
    older = ehr.chart_vitals(HIGH, WHEN)
    ehr.chart_vitals(NORMAL, WHEN + timedelta(minutes=5))
    outcome = _one(await _run(ehr, organization, event_about(older), {})).event
    assert isinstance(outcome, InferenceOutcome) and outcome.outcome == "superseded"
    evaluated = _one(await _run(ehr, organization, event_about(older), {"trigger": {"staleness": "evaluate"}})).event
    assert isinstance(evaluated, DraftProposed) and evaluated.summary["band"] == "high"


async def test_an_input_over_budget_is_an_outcome(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    outcome = _one(await _run(ehr, organization, event_about(trigger), {"budget": {"max_resources": 3}})).event
    assert isinstance(outcome, InferenceOutcome) and outcome.outcome == "budget-exceeded"
    assert "input 'vitals'" in outcome.detail and "at most 3" in outcome.detail


async def test_a_required_input_with_no_match_is_named(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = panel("Patient/p1", [], WHEN.isoformat())  # not added to the EHR: the search finds nothing
    trigger["id"] = "lonely"
    outcome = _one(await _run(ehr, organization, event_about(trigger), {})).event
    assert isinstance(outcome, InferenceOutcome)
    assert (outcome.outcome, outcome.missing) == ("insufficient-data", ("vitals",))


async def test_an_answer_outside_the_output_schema_is_an_outcome(organization: Organization) -> None:
    ehr = MockFhir()
    schema = {"model": {"output_schema": {"type": "object", "required": ["probability"]}}}
    outcome = _one(await _run(ehr, organization, event_about(ehr.chart_vitals(HIGH, WHEN)), schema)).event
    assert isinstance(outcome, InferenceOutcome) and outcome.outcome == "invalid-model-output"
    assert "breaks its output schema" in outcome.detail


async def test_local_codes_draft_through_the_mapping(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    for resource in ehr.resources:  # this EHR codes respiration rate locally
        for coding in resource.get("code", {}).get("coding", []):
            if coding["code"] == "9279-1":
                coding.update(system="urn:northfield:vitals", code="RESP")
    unmapped = _one(await _run(ehr, organization, event_about(trigger), {})).event
    assert isinstance(unmapped, InferenceOutcome) and unmapped.missing == ("respiration_rate",)
    mapping = {"mapping": {"codes": [{"source": "urn:northfield:vitals|RESP", "target": "http://loinc.org|9279-1"}]}}
    mapped = _one(await _run(ehr, organization, event_about(trigger), mapping)).event
    assert isinstance(mapped, DraftProposed) and mapped.summary["scores"]["respiration_rate"] == 3


async def test_a_trigger_bound_to_a_subscription_ignores_other_routes(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    bound = {"trigger": {"subscription": "vitals"}}
    assert await _run(ehr, organization, event_about(trigger), bound) == []
    assert await _run(ehr, organization, event_about(trigger, declared_subscription="labs"), bound) == []
    [result] = await _run(ehr, organization, event_about(trigger, declared_subscription="vitals"), bound)
    assert result.kind == "draft"


async def test_deletes_and_other_types_do_not_trigger(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    assert await _run(ehr, organization, event_about(trigger, interaction="delete"), {}) == []
    assert await _run(ehr, organization, event_about(trigger), {"trigger": {"resource_type": "Condition"}}) == []
    assert ehr.requests == []


async def test_debounce_waits_until_the_window_after_receipt(organization: Organization) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    ehr = MockFhir()
    event = event_about(ehr.chart_vitals(HIGH, WHEN), received_at=WHEN)
    window = {"trigger": {"debounce_s": 30}}
    await _run(ehr, organization, event, window, now=lambda: WHEN + timedelta(seconds=12), sleep=sleep)
    await _run(ehr, organization, event, window, now=lambda: WHEN + timedelta(seconds=45), sleep=sleep)  # due
    await _run(ehr, organization, event, {}, now=lambda: WHEN, sleep=sleep)  # no window
    assert waits == [18.0]


async def test_the_contract_profile_is_claimed_and_another_output_type_refused(organization: Organization) -> None:
    ehr = MockFhir()
    profile = "https://example.org/StructureDefinition/news2-risk"
    trigger = ehr.chart_vitals(HIGH, WHEN)
    [result] = await _run(ehr, organization, event_about(trigger), {"output": {"profile": profile}})
    assert isinstance(result.event, DraftProposed) and result.event.resource["meta"]["profile"] == [profile]
    with pytest.raises(ConfigurationError, match="drafted a RiskAssessment; its contract says Observation"):
        await _run(ehr, organization, event_about(trigger), {"output": {"resource_type": "Observation"}})


async def test_local_unit_strings_are_mapped_to_ucum_and_converted(organization: Organization) -> None:
    ehr = MockFhir()
    trigger = ehr.chart_vitals(HIGH, WHEN)
    for resource in ehr.resources:  # this EHR writes temperatures in Fahrenheit, with a unit string of its own
        if any(c["code"] == "8310-5" for c in resource.get("code", {}).get("coding", [])):
            resource["valueQuantity"] = {"value": 101.5, "unit": "F"}
    unmapped = _one(await _run(ehr, organization, event_about(trigger), {})).event
    assert isinstance(unmapped, InferenceOutcome) and unmapped.missing == ("temperature",)
    mapped = _one(await _run(ehr, organization, event_about(trigger), {"mapping": {"units": {"F": "[degF]"}}})).event
    assert isinstance(mapped, DraftProposed) and mapped.summary["scores"]["temperature"] == 1  # 38.6 °C
