"""NEWS2: from a charted vital-signs set to a draft RiskAssessment, or the reason why not.

The trigger is the panel Observation that closes a set of vital signs. The score is taken from the latest
reading of each parameter within the contract's look-back (input ``vitals``); an active Condition coded as
in ``parameters.spo2_scale2_conditions`` (input ``conditions``) puts the patient on SpO2 scale 2. The model
is the builtin ``score.predict``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ehrflow_contracts import NotificationReceived
from ehrflow_contracts.fhir import AI_ASSISTED, checked, invalid_fields
from ehrflow_inference.contract import Contract, parse_code
from ehrflow_inference.evaluation import Drafted, FhirReader, Outcome
from ehrflow_inference.evidence import describe_all
from ehrflow_inference.fhir_values import versioned
from ehrflow_inference.inputs import gather
from ehrflow_inference.models import ModelClient
from ehrflow_inference.workflows.base import Workflow, codes_of
from ehrflow_inference.workflows.news2.score import PARAMETERS
from ehrflow_inference.workflows.news2.vitals import effective_time, latest

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


class News2Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    spo2_scale2_conditions: tuple[str, ...] = Field(
        default=(), description="Active Condition codes (`system|code`) that put a patient on SpO2 scale 2."
    )

    @field_validator("spo2_scale2_conditions")
    @classmethod
    def _codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any("|" not in c for c in value):
            raise ValueError("each code is system|code")
        return value


class News2Contract(Contract):
    parameters: News2Parameters = News2Parameters()

    @field_validator("inputs")
    @classmethod
    def _needs_vitals(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "vitals" not in value or "conditions" not in value:
            raise ValueError("NEWS2 reads the inputs 'vitals' and 'conditions'")
        if value["vitals"].lookback_hours is None:
            raise ValueError("input 'vitals' needs lookback_hours: older vital signs do not count")
        return value


class News2(Workflow[News2Contract]):
    name = "news2"
    contract_model = News2Contract
    contract_file: ClassVar[Path] = Path(__file__).with_name("contract.yaml")

    async def draft(
        self, event: NotificationReceived, contract: News2Contract, fhir: FhirReader, model: ModelClient
    ) -> Drafted | Outcome | None:
        assert event.focus is not None and event.focus.reference is not None  # triggered_by checked it
        trigger = event.resource or await fhir.read(event.focus.reference)
        # A sender's payload (or an EHR's answer) of the wrong shape is an outcome, not an exception to retry:
        # checked against the FHIR models before anything reads a field of it.
        if problem := invalid_fields(trigger, "Observation"):
            return Outcome("invalid-input", f"the trigger is {problem}")
        if not self.is_trigger(trigger, contract):
            return None
        subject = (trigger.get("subject") or {}).get("reference", "")
        when = effective_time(trigger)
        if not subject.startswith("Patient/") or when is None:
            return Outcome(
                "insufficient-data", "trigger has no patient or time", subject or None, ("subject", "effective")
            )
        found = await gather(contract, fhir, subject)
        vitals, conditions = found["vitals"], found["conditions"]
        if contract.trigger.staleness == "skip-superseded" and self._superseded(trigger, when, vitals, contract):
            return Outcome("superseded", "a newer vital-signs set was charted for this patient", subject)
        lookback = contract.inputs["vitals"].lookback_hours or 0
        readings = latest(vitals, contract, not_before=when - timedelta(hours=lookback), not_after=when)
        missing = tuple(p for p in PARAMETERS if p not in readings)
        if missing:
            return Outcome("insufficient-data", "required vital signs are missing", subject, missing)
        wanted = {parse_code(c) for c in contract.parameters.spo2_scale2_conditions}
        scale = 2 if any(codes_of(c.get("code"), contract) & wanted for c in conditions) else 1
        result = await model.predict(
            {
                "respiration_rate": readings["respiration_rate"].value,
                "spo2": readings["spo2"].value,
                "on_oxygen": readings["air_or_oxygen"].value,
                "systolic_bp": readings["systolic_bp"].value,
                "pulse": readings["pulse"].value,
                "consciousness": readings["consciousness"].value,
                "temperature": readings["temperature"].value,
                "spo2_scale": scale,
            }
        )
        basis = sorted({r.basis for r in readings.values()})
        total, band, scores = result["total"], result["band"], result["scores"]
        return Drafted(
            patient=subject,
            resource=_risk_assessment(subject, when.isoformat(), total, band, scores, basis, scale, model),
            basis=tuple(basis),
            occurred_at=when,
            summary={"score": total, "band": band, "scores": scores, "spo2_scale": scale},
            evidence=describe_all([o for o in vitals if versioned(o) in basis]),
        )

    def _superseded(
        self, trigger: dict[str, Any], when: datetime, vitals: list[dict[str, Any]], contract: News2Contract
    ) -> bool:
        """Whether the EHR holds a newer vital-signs set (another trigger) for the patient than this one."""
        own = trigger.get("id")
        for obs in vitals:
            if obs.get("id") == own or not self.is_trigger(obs, contract):
                continue
            other = effective_time(obs)
            if other is not None and other > when:
                return True
        return False


def _risk_assessment(
    patient: str,
    when: str,
    total: int,
    band: str,
    scores: dict[str, int],
    basis: list[str],
    scale: int,
    model: ModelClient,
) -> dict[str, Any]:
    rationale = (
        f"NEWS2 aggregate score {total} ({', '.join(f'{k} {v}' for k, v in scores.items())}); SpO2 scale {scale}."
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
                    "coding": [{"system": SYSTEM_RISK, "code": band, "display": BAND_DISPLAY[band]}],
                    "text": f"NEWS2 {total}: {BAND_DISPLAY[band]}",
                },
                "rationale": rationale,
            }
        ],
        "note": [{"text": f"Drafted by {model.spec.name} {model.spec.version}; requires clinician review."}],
    }
    return checked(resource)
