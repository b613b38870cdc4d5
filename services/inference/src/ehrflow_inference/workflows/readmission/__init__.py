"""30-day readmission risk: when an inpatient stay ends, a tabular model over KServe v2 estimates the risk of
readmission within 30 days, drafted as a RiskAssessment.

The features, in the order the model was trained on: age in years at discharge, inpatient admissions in the
12 months before (input ``admissions``, the index stay left out), length of the index stay in days, active
conditions (input ``conditions``) and active medication requests (input ``medications``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ehrflow_contracts import NotificationReceived
from ehrflow_contracts.fhir import AI_ASSISTED, checked, invalid_fields
from ehrflow_inference.contract import Contract, parse_code
from ehrflow_inference.evaluation import Drafted, FhirReader, Outcome
from ehrflow_inference.evidence import describe_all
from ehrflow_inference.fhir_values import instant, versioned
from ehrflow_inference.inputs import gather
from ehrflow_inference.models import ModelClient
from ehrflow_inference.workflows.base import Workflow

FEATURES = ("age_years", "admissions_12m", "length_of_stay_days", "active_conditions", "active_medications")
SYSTEM_RISK = "https://ehrflow.dev/fhir/CodeSystem/readmission-risk"


class ReadmissionParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    high_risk_at: float = Field(default=0.3, gt=0, lt=1, description="Probability from which the risk reads high.")


class ReadmissionContract(Contract):
    parameters: ReadmissionParameters = ReadmissionParameters()

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = {"patient", "admissions", "conditions", "medications"} - set(value)
        if missing:
            raise ValueError(f"the readmission workflow reads the inputs {', '.join(sorted(missing))}")
        return value


class Readmission(Workflow[ReadmissionContract]):
    name = "readmission"
    contract_model = ReadmissionContract
    contract_file: ClassVar[Path] = Path(__file__).with_name("contract.yaml")

    def is_trigger(self, resource: dict[str, Any], contract: ReadmissionContract) -> bool:
        """A finished stay whose class (an Encounter has no ``code``) is one of the trigger's codes."""
        if resource.get("resourceType") != "Encounter" or resource.get("status") != "finished":
            return False
        klass = resource.get("class")
        if not contract.trigger.codes:
            return True
        if not isinstance(klass, dict):
            return False
        code = contract.translate(str(klass.get("system", "")), str(klass.get("code", "")))
        return code in {parse_code(c) for c in contract.trigger.codes}

    async def draft(
        self, event: NotificationReceived, contract: ReadmissionContract, fhir: FhirReader, model: ModelClient
    ) -> Drafted | Outcome | None:
        assert event.focus is not None and event.focus.reference is not None
        encounter = event.resource or await fhir.read(event.focus.reference)
        if problem := invalid_fields(encounter, "Encounter"):
            return Outcome("invalid-input", f"the trigger is {problem}")
        if not self.is_trigger(encounter, contract):
            return None
        subject = (encounter.get("subject") or {}).get("reference", "")
        period = encounter.get("period") or {}
        start, end = instant(period.get("start")), instant(period.get("end"))
        if not subject.startswith("Patient/") or start is None or end is None:
            return Outcome(
                "insufficient-data",
                "the stay has no patient or no start and end",
                subject or None,
                ("subject", "period"),
            )
        found = await gather(contract, fhir, subject)
        stays = [e for e in found["admissions"] if e.get("id") != encounter.get("id") and self.is_trigger(e, contract)]
        ends = [(instant((e.get("period") or {}).get("end")), e) for e in stays]
        if contract.trigger.staleness == "skip-superseded" and any(t is not None and t > end for t, _ in ends):
            return Outcome("superseded", "a later inpatient stay of this patient has ended", subject)
        lookback = contract.inputs["admissions"].lookback_hours or 0
        earlier = [e for t, e in ends if t is not None and 0 <= (end - t).total_seconds() <= lookback * 3600]
        birth = instant(f"{(found['patient'][0].get('birthDate') or '')[:10]}T00:00:00+00:00")
        if birth is None:
            return Outcome("insufficient-data", "the patient's birth date is not recorded", subject, ("birthDate",))
        features = [
            (end - birth).days / 365.25,
            float(len(earlier)),
            (end - start).total_seconds() / 86400,
            float(len(found["conditions"])),
            float(len(found["medications"])),
        ]
        answer = await model.predict({"input-0": features})
        probability = float(answer["predict_proba"][1])
        band = "high" if probability >= contract.parameters.high_risk_at else "low"
        basis = sorted({versioned(encounter), *(versioned(r) for r in found["conditions"] + found["medications"])})
        return Drafted(
            patient=subject,
            resource=_risk_assessment(subject, end.isoformat(), probability, band, basis, features, model),
            basis=tuple(basis),
            occurred_at=end,
            summary={"probability": round(probability, 4), "band": band, **dict(zip(FEATURES, features, strict=True))},
            evidence=describe_all([encounter, *found["conditions"], *found["medications"]]),
        )


def _risk_assessment(
    patient: str, when: str, probability: float, band: str, basis: list[str], features: list[float], model: ModelClient
) -> dict[str, Any]:
    figures = ", ".join(f"{name} {value:g}" for name, value in zip(FEATURES, features, strict=True))
    return checked(
        {
            "resourceType": "RiskAssessment",
            "meta": {"security": [AI_ASSISTED]},
            "status": "preliminary",
            "subject": {"reference": patient},
            "occurrenceDateTime": when,
            "method": {"text": f"{model.spec.name} {model.spec.version} (tabular model, KServe v2)"},
            "basis": [{"reference": ref} for ref in basis],
            "prediction": [
                {
                    "outcome": {"text": "Readmission within 30 days"},
                    "probabilityDecimal": round(probability, 4),
                    "qualitativeRisk": {"coding": [{"system": SYSTEM_RISK, "code": band}], "text": f"{band} risk"},
                    "whenRange": {
                        "high": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}
                    },
                    "rationale": f"Features: {figures}.",
                }
            ],
            "note": [{"text": f"Drafted by {model.spec.name} {model.spec.version}; requires clinician review."}],
        }
    )
