"""The reference scenario's clinical data, and how an EHR is set up to notify ehrflow.

Each organization gets three patients: one whose vitals score low, one high, and one whose vital
signs lack a NEWS2 parameter. Organization 2's low-risk patient is on SpO2 scale 2 (a Condition says
so), so an SpO2 of 89 % on air scores 0 there rather than 3. Names and birth dates are synthetic and
exist so tests can prove they never reach a log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

LOINC = "http://loinc.org"
VITAL_SIGNS = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]
}
ACVPU = "https://ehrflow.dev/fhir/CodeSystem/acvpu"
NEWS2 = "https://ehrflow.dev/fhir/CodeSystem/news2"
PANEL = "85353-1"
TOPIC_URL = "https://ehrflow.dev/fhir/SubscriptionTopic/vital-signs-recorded"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
ST = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"


@dataclass(frozen=True)
class Vitals:
    respiration_rate: float | None
    spo2: float | None
    oxygen_flow_l_min: float | None
    systolic_bp: float | None
    pulse: float | None
    acvpu: str | None
    temperature: float | None


@dataclass(frozen=True)
class PatientCase:
    key: str
    given: str
    family: str
    birth_date: str
    vitals: Vitals
    expect: str
    """``low`` / ``medium`` / ``high`` / ``insufficient``"""
    expect_score: int | None = None
    scale2: bool = False
    ids: dict[str, str] = field(default_factory=dict, compare=False)


def cases(org: str) -> list[PatientCase]:
    normal_scale2 = org == "org2"
    return [
        PatientCase(
            "stable",
            "Ada" if org == "org1" else "Bram",
            "Quillfeather" if org == "org1" else "Oakenshield",
            "1961-04-12" if org == "org1" else "1949-09-30",
            Vitals(16, 89 if normal_scale2 else 97, 0, 128, 72, "A", 37.0),
            "low",
            0,
            scale2=normal_scale2,
        ),
        PatientCase(
            "deteriorating",
            "Cyrus" if org == "org1" else "Delia",
            "Marchbanks" if org == "org1" else "Winterbourne",
            "1957-01-23" if org == "org1" else "1970-06-05",
            Vitals(26, 90, 4, 95, 125, "A", 38.6),
            "high",
            13,
        ),
        PatientCase(
            "incomplete",
            "Edmund" if org == "org1" else "Freya",
            "Ravenscroft" if org == "org1" else "Holloway",
            "1984-11-02" if org == "org1" else "1991-02-17",
            Vitals(18, 96, 0, 135, 80, None, 36.8),
            "insufficient",
        ),
    ]


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": code}


def vital_observations(patient_ref: str, v: Vitals, when: str) -> list[dict[str, Any]]:
    """Individual vital-sign Observations, as a nurse's charting would create them."""

    def obs(code: str, display: str, **value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": [VITAL_SIGNS],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": patient_ref},
            "effectiveDateTime": when,
            **value,
        }

    out = []
    if v.respiration_rate is not None:
        out.append(obs("9279-1", "Respiratory rate", valueQuantity=_quantity(v.respiration_rate, "/min", "/min")))
    if v.spo2 is not None:
        out.append(obs("59408-5", "Oxygen saturation by pulse oximetry", valueQuantity=_quantity(v.spo2, "%", "%")))
    if v.oxygen_flow_l_min is not None:
        out.append(
            obs("3151-8", "Inhaled oxygen flow rate", valueQuantity=_quantity(v.oxygen_flow_l_min, "L/min", "L/min"))
        )
    if v.systolic_bp is not None:
        out.append(obs("8480-6", "Systolic blood pressure", valueQuantity=_quantity(v.systolic_bp, "mmHg", "mm[Hg]")))
    if v.pulse is not None:
        out.append(obs("8867-4", "Heart rate", valueQuantity=_quantity(v.pulse, "/min", "/min")))
    if v.acvpu is not None:
        out.append(
            obs(
                "67775-7",
                "Level of responsiveness",
                valueCodeableConcept={"coding": [{"system": ACVPU, "code": v.acvpu}]},
            )
        )
    if v.temperature is not None:
        out.append(obs("8310-5", "Body temperature", valueQuantity=_quantity(v.temperature, "Cel", "Cel")))
    return out


def panel(patient_ref: str, members: list[str], when: str) -> dict[str, Any]:
    """The vital-signs panel that closes a charted set: the event NEWS2 is triggered by."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": PANEL, "display": "Vital signs panel"}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "hasMember": [{"reference": m} for m in members],
    }


MARKER_CODES = "https://ehrflow.dev/fhir/CodeSystem/test"
"""Code system of ``marked_observation``: no workflow triggers on it."""


def marked_observation(patient_ref: str, marker: str) -> dict[str, Any]:
    """A vital-signs Observation coded with ``marker``, so a test's subscription matches its own only."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": MARKER_CODES, "code": marker}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": "2026-11-21T08:00:00Z",
    }


def vital_signs_topic() -> dict[str, Any]:
    """A SubscriptionTopic (R4 backport encoding: a Basic) for recorded vital-sign Observations."""
    trigger = [
        {"url": "description", "valueMarkdown": "A vital-sign Observation was created or updated"},
        {"url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/Observation"},
        {"url": "supportedInteraction", "valueCode": "create"},
        {"url": "supportedInteraction", "valueCode": "update"},
        {"url": "fhirPathCriteria", "valueString": "%current.category.coding.where(code = 'vital-signs').exists()"},
    ]
    return {
        "resourceType": "Basic",
        "id": "topic-vital-signs-recorded",
        "modifierExtension": [{"url": f"{ST}.status", "valueCode": "active"}],
        "extension": [
            {"url": f"{ST}.url", "valueUri": TOPIC_URL},
            {"url": f"{ST}.version", "valueString": "1.0.0"},
            {"url": f"{ST}.name", "valueString": "vital_signs_recorded"},
            {"url": f"{ST}.title", "valueString": "Vital signs recorded"},
            {"url": f"{ST}.resourceTrigger", "extension": trigger},
            *[
                {
                    "url": f"{ST}.canFilterBy",
                    "extension": [
                        {"url": "resource", "valueUri": "Observation"},
                        {"url": "filterParameter", "valueString": p},
                    ],
                }
                for p in ("code", "patient")
            ],
        ],
        "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]},
    }


def subscription(endpoint: str, header: str, secret: str, content: str) -> dict[str, Any]:
    """A topic-based (R4 backport) rest-hook subscription for vital-signs panels."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "ehrflow NEWS2 early warning",
        "criteria": TOPIC_URL,
        "_criteria": {
            "extension": [
                {"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f"Observation?code={LOINC}|{PANEL}"}
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]},
            "header": [f"{header}: {secret}"],
        },
    }


class Ehr:
    """Set-up calls to a sandbox EHR with its static admin token (test set-up only, never ehrflow's path)."""

    def __init__(self, base: str, admin_token: str) -> None:
        self.base = base
        self.http = httpx.Client(
            base_url=base,
            timeout=15.0,
            headers={
                "Authorization": f"Bearer {admin_token}",
                "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json",
            },
        )

    def close(self) -> None:
        self.http.close()

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"/{resource['resourceType']}", json=resource)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = self.http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def delete(self, reference: str) -> None:
        self.http.delete(f"/{reference}").raise_for_status()

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/{resource_type}", params=params)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry", []) if "resource" in e]

    def subscribe(self, endpoint: str, header: str, secret: str, content: str, timeout: float = 30.0) -> str:
        """Create the topic and subscription; wait until the handshake made it active."""
        self.put(vital_signs_topic())
        sub = self.create(subscription(endpoint, header, secret, content))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.http.get(f"/Subscription/{sub['id']}").json().get("status")
            if status == "active":
                return str(sub["id"])
            if status == "error":
                raise RuntimeError(f"subscription {sub['id']} went to error (handshake refused?)")
            time.sleep(0.3)
        raise RuntimeError(f"subscription {sub['id']} not active after {timeout:.0f}s")

    def record_patient(self, case: PatientCase, when: datetime | None = None) -> PatientCase:
        """Create the patient, charted vitals and the closing panel; returns the case with ids filled in."""
        when = when or datetime.now(UTC).replace(microsecond=0)
        patient = self.create(
            {
                "resourceType": "Patient",
                "name": [{"given": [case.given], "family": case.family}],
                "birthDate": case.birth_date,
                "gender": "unknown",
            }
        )
        ref = f"Patient/{patient['id']}"
        case.ids["patient"] = ref
        if case.scale2:
            self.create(
                {
                    "resourceType": "Condition",
                    "subject": {"reference": ref},
                    "clinicalStatus": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                        ]
                    },
                    "code": {
                        "coding": [
                            {"system": NEWS2, "code": "spo2-scale-2", "display": "SpO2 target 88-92% (NEWS2 scale 2)"}
                        ]
                    },
                }
            )
        stamp = (when - timedelta(minutes=2)).isoformat()
        members = [f"Observation/{self.create(o)['id']}" for o in vital_observations(ref, case.vitals, stamp)]
        case.ids["panel"] = f"Observation/{self.create(panel(ref, members, when.isoformat()))['id']}"
        return case
