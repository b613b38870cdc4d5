"""The reference scenario's clinical data, and how an EHR is set up to notify ehrflow.

Each organization gets five patients. Three are for NEWS2: one whose vitals score low, one high, and one
whose vital signs lack a NEWS2 parameter; organization 2's low-risk patient is on SpO2 scale 2 (a Condition
says so), so an SpO2 of 89 % on air scores 0 there rather than 3. One is discharged after an inpatient stay
(the readmission workflow), one is put forward for a tumor board (the tumor-board summary). Names and
birth dates are synthetic and exist so tests can prove they never reach a log line.
"""

from __future__ import annotations

import base64
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
STAY_TOPIC_URL = "https://ehrflow.dev/fhir/SubscriptionTopic/inpatient-stay-ended"
BOARD_TOPIC_URL = "https://ehrflow.dev/fhir/SubscriptionTopic/tumor-board-requested"
TASK_CODES = "https://ehrflow.dev/fhir/CodeSystem/tasks"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
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
    vitals: Vitals | None
    expect: str
    """NEWS2: ``low`` / ``medium`` / ``high`` / ``insufficient``; the other workflows: ``drafted``"""
    expect_score: int | None = None
    scale2: bool = False
    workflow: str = "news2"
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
        PatientCase(
            "discharged",
            "Gideon" if org == "org1" else "Hester",
            "Ashdown" if org == "org1" else "Penhallow",
            "1944-03-08" if org == "org1" else "1952-12-19",
            None,
            "drafted",
            workflow="readmission",
        ),
        PatientCase(
            "tumor-board",
            "Imogen" if org == "org1" else "Jasper",
            "Fairweather" if org == "org1" else "Thornbury",
            "1968-07-14" if org == "org1" else "1959-05-27",
            None,
            "drafted",
            workflow="tumor-board",
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


def topic(
    ident: str, url: str, title: str, resource: str, interactions: tuple[str, ...], criteria: str
) -> dict[str, Any]:
    """A SubscriptionTopic in the R4 backport encoding (a Basic), filterable by code and patient."""
    trigger = [
        {"url": "description", "valueMarkdown": title},
        {"url": "resource", "valueUri": f"http://hl7.org/fhir/StructureDefinition/{resource}"},
        *[{"url": "supportedInteraction", "valueCode": i} for i in interactions],
        {"url": "fhirPathCriteria", "valueString": criteria},
    ]
    return {
        "resourceType": "Basic",
        "id": ident,
        "modifierExtension": [{"url": f"{ST}.status", "valueCode": "active"}],
        "extension": [
            {"url": f"{ST}.url", "valueUri": url},
            {"url": f"{ST}.version", "valueString": "1.0.0"},
            {"url": f"{ST}.name", "valueString": ident.replace("-", "_")},
            {"url": f"{ST}.title", "valueString": title},
            {"url": f"{ST}.resourceTrigger", "extension": trigger},
            *[
                {
                    "url": f"{ST}.canFilterBy",
                    "extension": [
                        {"url": "resource", "valueUri": resource},
                        {"url": "filterParameter", "valueString": p},
                    ],
                }
                for p in ("code", "patient")
            ],
        ],
        "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]},
    }


def vital_signs_topic() -> dict[str, Any]:
    """Recorded vital-sign Observations (created or updated)."""
    return topic(
        "topic-vital-signs-recorded",
        TOPIC_URL,
        "A vital-sign Observation was created or updated",
        "Observation",
        ("create", "update"),
        "%current.category.coding.where(code = 'vital-signs').exists()",
    )


def stay_ended_topic() -> dict[str, Any]:
    """An Encounter updated to finished (stays recorded as finished from the start are history, not news)."""
    return topic(
        "topic-inpatient-stay-ended",
        STAY_TOPIC_URL,
        "An Encounter ended",
        "Encounter",
        ("update",),
        "%current.status = 'finished'",
    )


def tumor_board_topic() -> dict[str, Any]:
    """A Task asking for tumor-board preparation was created."""
    return topic(
        "topic-tumor-board-requested",
        BOARD_TOPIC_URL,
        "A tumor-board preparation Task was created",
        "Task",
        ("create",),
        "%current.code.coding.where(code = 'tumor-board-preparation').exists()",
    )


WORKFLOW_TOPICS: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "news2": (vital_signs_topic(), TOPIC_URL, f"Observation?code={LOINC}|{PANEL}"),
    "readmission": (stay_ended_topic(), STAY_TOPIC_URL, None),
    "tumor-board": (tumor_board_topic(), BOARD_TOPIC_URL, None),
}
"""Per workflow: the topic the EHR needs, its canonical, and the subscription's filter criteria."""


def subscription(
    endpoint: str,
    header: str,
    secret: str,
    content: str,
    *,
    topic_url: str = TOPIC_URL,
    criteria: str | None = f"Observation?code={LOINC}|{PANEL}",
) -> dict[str, Any]:
    """A topic-based (R4 backport) rest-hook subscription (by default for vital-signs panels)."""
    filters = [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": criteria}] if criteria else []
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "ehrflow workflows",
        "criteria": topic_url,
        **({"_criteria": {"extension": filters}} if filters else {}),
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

    def subscribe(
        self, endpoint: str, header: str, secret: str, content: str, timeout: float = 30.0, *, workflow: str = "news2"
    ) -> str:
        """Create the workflow's topic and a subscription to it; wait until the handshake made it active."""
        resource, url, criteria = WORKFLOW_TOPICS[workflow]
        self.put(resource)
        sub = self.create(subscription(endpoint, header, secret, content, topic_url=url, criteria=criteria))
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
        """Create the patient and what its workflow is triggered by; returns the case with ids filled in."""
        when = when or datetime.now(UTC).replace(microsecond=0)
        if case.workflow == "readmission":
            return self.record_stay(case, when)
        if case.workflow == "tumor-board":
            return self.record_board(case, when)
        assert case.vitals is not None
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

    def _patient(self, case: PatientCase) -> str:
        patient = self.create(
            {
                "resourceType": "Patient",
                "name": [{"given": [case.given], "family": case.family}],
                "birthDate": case.birth_date,
                "gender": "unknown",
            }
        )
        case.ids["patient"] = f"Patient/{patient['id']}"
        return case.ids["patient"]

    def _condition(self, patient: str, text: str) -> None:
        self.create(
            {
                "resourceType": "Condition",
                "subject": {"reference": patient},
                "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
                "code": {"text": text},
            }
        )

    def _medication(self, patient: str, text: str) -> None:
        self.create(
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": patient},
                "medicationCodeableConcept": {"text": text},
            }
        )

    def record_stay(self, case: PatientCase, when: datetime) -> PatientCase:
        """Two earlier inpatient stays this year, three active conditions, four medications, then the index
        stay: created in progress and updated to finished (the update is what the EHR notifies)."""
        patient = self._patient(case)

        def stay(start: datetime, end: datetime | None) -> dict[str, Any]:
            return {
                "resourceType": "Encounter",
                "status": "finished" if end else "in-progress",
                "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
                "subject": {"reference": patient},
                "period": {"start": start.isoformat(), **({"end": end.isoformat()} if end else {})},
            }

        for days_ago, length in ((100, 4), (30, 2)):
            start = when - timedelta(days=days_ago)
            self.create(stay(start, start + timedelta(days=length)))
        for text in (
            "Heart failure with reduced ejection fraction",
            "Chronic kidney disease stage 3",
            "Type 2 diabetes",
        ):
            self._condition(patient, text)
        for text in ("Furosemide 40 mg", "Bisoprolol 5 mg", "Ramipril 2.5 mg", "Metformin 500 mg"):
            self._medication(patient, text)
        index = self.create(stay(when - timedelta(days=6), None))
        index.update(stay(when - timedelta(days=6), when))
        self.put(index)
        case.ids["trigger"] = f"Encounter/{index['id']}"
        return case

    def record_board(self, case: PatientCase, when: datetime) -> PatientCase:
        """An oncology record (diagnosis, biopsy report, treatment, a clinic note), then the tumor-board Task."""
        patient = self._patient(case)
        self._condition(patient, "Invasive ductal carcinoma of the left breast, cT2 N1 M0")
        self.create(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "Core needle biopsy, left breast"},
                "subject": {"reference": patient},
                "effectiveDateTime": (when - timedelta(days=12)).isoformat(),
                "conclusion": "Grade 2 invasive ductal carcinoma; ER positive, PR positive, HER2 negative.",
            }
        )
        self._medication(patient, "Letrozole 2.5 mg daily")
        note = "Clinic note: 4 cm mass left breast, palpable axillary node. Staging CT without distant disease."
        self.create(
            {
                "resourceType": "DocumentReference",
                "status": "current",
                "type": {"text": "Oncology clinic note"},
                "subject": {"reference": patient},
                "date": (when - timedelta(days=5)).isoformat(),
                "content": [
                    {"attachment": {"contentType": "text/plain", "data": base64.b64encode(note.encode()).decode()}}
                ],
            }
        )
        task = self.create(
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": TASK_CODES, "code": "tumor-board-preparation"}]},
                "for": {"reference": patient},
                "authoredOn": when.isoformat(),
            }
        )
        case.ids["trigger"] = f"Task/{task['id']}"
        return case
