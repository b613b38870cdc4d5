"""The NEWS2 workflow: from a notification event to a draft RiskAssessment, or a reason why not.

No FastStream here: ``handle`` takes an event and a FHIR client and returns what to publish.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any, Protocol

from ehrflow_contracts import DraftProposed, InferenceOutcome, ModelRef, NotificationReceived
from ehrflow_contracts.fhir import AI_ASSISTED, invalid_fields, validate
from ehrflow_inference import news2
from ehrflow_inference.vitals import codings, effective_time, latest
from ehrflow_runtime.organizations import News2Workflow

log = logging.getLogger("ehrflow.inference")

WORKFLOW = "news2"
MODEL = ModelRef(name="ehrflow-news2", version="1.0.0")
SYSTEM_RISK = "https://ehrflow.dev/fhir/CodeSystem/news2-risk"
NEWS2_METHOD = {
    "system": "http://snomed.info/sct",
    "code": "1104051000000101",
    "display": "Royal College of Physicians National Early Warning Score 2 (NEWS2) total score",
}
BAND_DISPLAY = {
    "low": "Low clinical risk",
    "low-medium": "Low-medium clinical risk (a single parameter scored 3)",
    "medium": "Medium clinical risk",
    "high": "High clinical risk",
}


class FhirReader(Protocol):
    async def read(self, reference: str) -> dict[str, Any]: ...

    async def search(
        self, resource_type: str, params: dict[str, str] | list[tuple[str, str]]
    ) -> list[dict[str, Any]]: ...


def _parse_code(token: str) -> tuple[str, str]:
    system, _, code = token.rpartition("|")
    return system, code


def is_trigger(observation: dict[str, Any], contract: News2Workflow) -> bool:
    wanted = {_parse_code(t) for t in contract.trigger_codes}
    return observation.get("resourceType") == "Observation" and bool(codings(observation.get("code")) & wanted)


def draft_id(organization_id: str, patient: str, basis: list[str]) -> str:
    """The same organization, patient and inputs always give the same draft (idempotent redelivery)."""
    material = "\x1f".join([organization_id, WORKFLOW, MODEL.version, patient, *sorted(basis)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def risk_assessment(patient: str, when: str, result: news2.News2Result, basis: list[str], scale: int) -> dict[str, Any]:
    rationale = (
        f"NEWS2 aggregate score {result.total} ({', '.join(f'{k} {v}' for k, v in result.scores.items())}); "
        f"SpO2 scale {scale}."
    )
    resource = {
        "resourceType": "RiskAssessment",
        "meta": {"security": [AI_ASSISTED]},
        "status": "preliminary",
        "subject": {"reference": patient},
        "occurrenceDateTime": when,
        "method": {"coding": [NEWS2_METHOD], "text": "NEWS2"},
        "basis": [{"reference": ref} for ref in basis],
        "prediction": [
            {
                "outcome": {"text": "Acute clinical deterioration"},
                "qualitativeRisk": {
                    "coding": [{"system": SYSTEM_RISK, "code": result.band, "display": BAND_DISPLAY[result.band]}],
                    "text": f"NEWS2 {result.total}: {BAND_DISPLAY[result.band]}",
                },
                "rationale": rationale,
            }
        ],
        "note": [{"text": f"Drafted by {MODEL.name} {MODEL.version}; requires clinician review."}],
    }
    return validate(resource)


async def handle(
    event: NotificationReceived, contract: News2Workflow, fhir: FhirReader
) -> DraftProposed | InferenceOutcome | None:
    """Apply the NEWS2 contract to one event. None: the event is not a NEWS2 trigger."""
    if event.notification_type != "event-notification" or not event.focus or not event.focus.reference:
        return None
    if not event.focus.reference.startswith("Observation/"):
        return None
    trigger = event.resource or await fhir.read(event.focus.reference)
    # A sender's payload (or an EHR's answer) of the wrong shape is an outcome, not an exception to retry:
    # checked against the FHIR models before anything reads a field of it.
    if problem := invalid_fields(trigger, "Observation"):
        log.info("invalid trigger", extra={"org": event.organization_id, "focus": event.focus.reference})
        return InferenceOutcome(
            organization_id=event.organization_id,
            correlation_id=event.correlation_id,
            workflow=WORKFLOW,
            outcome="invalid-input",
            detail=f"the trigger is {problem}",
        )
    if not is_trigger(trigger, contract):
        return None
    subject = (trigger.get("subject") or {}).get("reference", "")
    when = effective_time(trigger)
    if not subject.startswith("Patient/") or when is None:
        return _insufficient(event, subject or None, ("subject", "effective"), "trigger has no patient or time")
    observations = await fhir.search(
        "Observation",
        [("patient", subject), ("category", "vital-signs"), ("_sort", "-date"), ("_count", "200")],
    )
    found = latest(observations, not_before=when - timedelta(hours=contract.max_age_hours), not_after=when)
    missing = tuple(p for p in news2.PARAMETERS if p not in found)
    if missing:
        log.info("insufficient data", extra={"org": event.organization_id, "patient": subject, "missing": missing})
        return _insufficient(event, subject, missing, "required vital signs are missing")
    scale = 2 if await _on_scale2(fhir, subject, contract) else 1
    vitals = news2.Vitals(
        respiration_rate=found["respiration_rate"].value,
        spo2=found["spo2"].value,
        on_oxygen=found["air_or_oxygen"].value,
        systolic_bp=found["systolic_bp"].value,
        pulse=found["pulse"].value,
        consciousness=found["consciousness"].value,
        temperature=found["temperature"].value,
        spo2_scale=scale,  # type: ignore[arg-type]
    )
    result = news2.score(vitals)
    basis = sorted({r.basis for r in found.values()})
    did = draft_id(event.organization_id, subject, basis)
    log.info(
        "news2 drafted", extra={"org": event.organization_id, "patient": subject, "draft_id": did, "band": result.band}
    )
    return DraftProposed(
        organization_id=event.organization_id,
        correlation_id=event.correlation_id,
        occurred_at=when,
        draft_id=did,
        workflow=WORKFLOW,
        model=MODEL,
        patient=subject,
        resource=risk_assessment(subject, when.isoformat(), result, basis, scale),
        basis=tuple(basis),
        summary={"score": result.total, "band": result.band, "scores": result.scores, "spo2_scale": scale},
        auto_approve=contract.auto_approve,
    )


async def _on_scale2(fhir: FhirReader, patient: str, contract: News2Workflow) -> bool:
    if not contract.spo2_scale2_conditions:
        return False
    conditions = await fhir.search("Condition", [("patient", patient), ("clinical-status", "active")])
    wanted = {_parse_code(t) for t in contract.spo2_scale2_conditions}
    return any(codings(c.get("code")) & wanted for c in conditions)


def _insufficient(
    event: NotificationReceived, patient: str | None, missing: tuple[str, ...], detail: str
) -> InferenceOutcome:
    return InferenceOutcome(
        organization_id=event.organization_id,
        correlation_id=event.correlation_id,
        workflow=WORKFLOW,
        outcome="insufficient-data",
        patient=patient,
        missing=missing,
        detail=detail,
    )
