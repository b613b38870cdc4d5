"""Audit records as FHIR R4 AuditEvents in the style of IHE Basic Audit Log Patterns (BALP).

Every ``AuditRecorded`` on the audit topic carries its AuditEvent (``AuditRecorded.audit_event``), and
writeback writes it to an organization's EHR where that organization asks for it. What an action becomes:

- ``session.*``, ``launch.*``, ``token.*``: DICOM 110114 User Authentication / 110122 Login, action E;
- ``review.viewed``: ``rest`` / ``read``, action R, BALP (Patient)Read;
- ``review.decided``, ``review.refused``: ``rest`` / ``update``, action U, BALP (Patient)Update;
- ``draft.written``, ``draft.write-failed``: ``rest`` / ``create``, action C, BALP (Patient)Create;
- anything else: DICOM 110100 Application Activity, action E.

The agents are BALP's: the requestor (a clinician's ``Practitioner/…`` reference, or an ehrflow service as
the *Source Role ID*) and ehrflow as the *Destination Role ID*; ``source`` names the service that saw it and
``site`` the organization. Entities are references only: the patient (role *Patient*), each FHIR resource
touched, and each draft by its identifier; the record's ``details`` (ids, codes, counts; never free text)
ride on the first entity that is not the patient. No names, no values, no comments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ehrflow_contracts.fhir import SYSTEM_DRAFT, SYSTEM_TAG, TAG_GENERATED

if TYPE_CHECKING:
    from ehrflow_contracts.events import AuditRecorded

SYSTEM_AUDIT_RECORD = "https://ehrflow.dev/fhir/CodeSystem/audit-record"
"""``meta.tag`` system whose code is the audit record's event id: the key of idempotent writes to an EHR."""

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

Kind = Literal["login", "read", "update", "create", "activity"]

_KINDS: dict[str, Kind] = {
    "review.viewed": "read",
    "review.decided": "update",
    "review.refused": "update",
    "draft.written": "create",
    "draft.write-failed": "create",
}
_PREFIXES: dict[str, Kind] = {"session.": "login", "launch.": "login", "token.": "login"}
_ACTION_CODE: dict[Kind, str] = {"login": "E", "read": "R", "update": "U", "create": "C", "activity": "E"}
_PROFILE: dict[Kind, str] = {"read": "Read", "update": "Update", "create": "Create"}


def kind_of(action: str) -> Kind:
    """What kind of event ``action`` is, for its AuditEvent's type, subtype and action code."""
    if action in _KINDS:
        return _KINDS[action]
    return next((k for prefix, k in _PREFIXES.items() if action.startswith(prefix)), "activity")


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _type(kind: Kind) -> tuple[dict[str, str], list[dict[str, str]]]:
    if kind == "login":
        return _coding(DCM, "110114", "User Authentication"), [_coding(DCM, "110122", "Login")]
    if kind == "activity":
        return _coding(DCM, "110100", "Application Activity"), []
    return _coding(EVENT_TYPE, "rest", "Restful Operation"), [_coding(INTERACTION, kind, kind)]


def _is_reference(value: str) -> bool:
    head, _, tail = value.partition("/")
    return bool(head[:1].isupper() and head.isalpha() and tail and "/" not in tail)


def _outcome(record: AuditRecorded) -> str:
    """0 success, 4 minor failure (a refusal), 8 serious failure (a write that did not happen)."""
    if record.outcome == "success":
        return "0"
    return "8" if record.action.endswith("failed") else "4"


def audit_event(record: AuditRecorded) -> dict[str, Any]:
    """``record`` as a FHIR R4 AuditEvent (JSON), BALP style; valid by the pinned FHIR models."""
    kind = kind_of(record.action)
    event_type, subtype = _type(kind)
    requestor: dict[str, Any] = {"requestor": True}
    if _is_reference(record.actor):
        requestor["who"] = {"reference": record.actor}
    else:  # an ehrflow service, or nobody known (an unauthenticated caller)
        requestor["type"] = {"coding": [_coding(DCM, "110153", "Source Role ID")]}
        requestor["who"] = {"display": record.actor}
    server = {
        "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": f"ehrflow {record.source}"},
        "requestor": False,
    }
    entities: list[dict[str, Any]] = []
    if record.patient:
        entities.append(
            {
                "what": {"reference": record.patient},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    data = _coding(ENTITY_TYPE, "2", "System Object")
    domain = _coding(OBJECT_ROLE, "4", "Domain Resource")
    for reference in record.entities:
        entities.append({"what": {"reference": reference}, "type": data, "role": domain})
    for draft_id in record.drafts:
        what = {"identifier": {"system": SYSTEM_DRAFT, "value": draft_id}, "display": "ehrflow draft"}
        entities.append({"what": what, "type": data, "role": domain})
    details = [
        {"type": key, "valueString": str(value)} for key, value in sorted(record.details.items()) if value is not None
    ]
    if details:
        holder = next((e for e in entities if e["role"] is domain), None)
        if holder is None:
            holder = {"what": {"display": record.action}, "type": data}
            entities.append(holder)
        holder["detail"] = details
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "meta": {
            "tag": [
                {"system": SYSTEM_TAG, "code": TAG_GENERATED},
                {"system": SYSTEM_AUDIT_RECORD, "code": record.event_id},
            ]
        },
        "type": event_type,
        "action": _ACTION_CODE[kind],
        "recorded": record.occurred_at.isoformat(),
        "outcome": _outcome(record),
        "outcomeDesc": record.action,
        "agent": [requestor, server],
        "source": {
            "site": record.organization_id,
            "observer": {"display": f"ehrflow {record.source}"},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if subtype:
        event["subtype"] = subtype
    if kind in _PROFILE:
        event["meta"]["profile"] = [BALP + ("Patient" if record.patient else "") + _PROFILE[kind]]
    if entities:
        event["entity"] = entities
    return event
