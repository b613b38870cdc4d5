"""The inputs of a draft as a reviewer reads them: one ``Evidence`` per resource the workflow used.

The review screen shows these beside the result (label, value with unit, and when), so a clinician sees
what the model saw without opening the chart; they travel in ``DraftProposed.evidence``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ehrflow_contracts import Evidence
from ehrflow_inference.fhir_values import versioned

WHEN = (
    "effectiveDateTime",
    "effectiveInstant",
    "performedDateTime",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "occurrenceDateTime",
    "date",
    "issued",
)
PERIODS = ("effectivePeriod", "performedPeriod", "onsetPeriod", "period")


def concept(value: Any) -> str:
    """A CodeableConcept as a person reads it: its text, else its first display, else its first code."""
    if not isinstance(value, dict):
        return ""
    if isinstance(value.get("text"), str):
        return str(value["text"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _coding(value: Any) -> str:
    return str(value.get("display") or value.get("code") or "") if isinstance(value, dict) else ""


def when(resource: dict[str, Any]) -> datetime | None:
    """When it happened: the first date element a resource of its type carries (a period's start or end)."""
    found: Any = next((resource[k] for k in WHEN if isinstance(resource.get(k), str)), None)
    if found is None:
        period: dict[str, Any] = next((resource[k] for k in PERIODS if isinstance(resource.get(k), dict)), {})
        found = period.get("end") or period.get("start")
    if not isinstance(found, str):
        return None
    try:
        return datetime.fromisoformat(found.replace("Z", "+00:00"))
    except ValueError:
        return None


def value_and_unit(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    """The value as charted and its unit; a panel's components joined (``Systolic 120 mm[Hg]; …``)."""
    components = [c for c in resource.get("component") or [] if isinstance(c, dict)]
    if components and not any(k.startswith("value") for k in resource):
        parts = []
        for c in components:
            value, unit = value_and_unit({k: v for k, v in c.items() if k != "component"})
            parts.append(" ".join(x for x in (concept(c.get("code")), value, unit) if x))
        return "; ".join(parts), None
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        return str(quantity["value"]), quantity.get("unit") or quantity.get("code")
    if isinstance(resource.get("valueString"), str):
        return str(resource["valueString"]), None
    if isinstance(resource.get("valueBoolean"), bool):
        return ("yes" if resource["valueBoolean"] else "no"), None
    coded = concept(resource.get("valueCodeableConcept"))
    if coded:
        return coded, None
    status = concept(resource.get("clinicalStatus")) or resource.get("status")
    return (str(status), None) if status else (None, None)


def describe(resource: dict[str, Any]) -> Evidence:
    label = (
        concept(resource.get("code"))
        or concept(resource.get("medicationCodeableConcept"))
        or concept(resource.get("type"))
        or _coding(resource.get("class"))  # an Encounter's class is a Coding in R4
        or str(resource.get("resourceType", "resource"))
    )
    value, unit = value_and_unit(resource)
    return Evidence(reference=versioned(resource), label=label, value=value, unit=unit, when=when(resource))


def describe_all(resources: list[dict[str, Any]]) -> tuple[Evidence, ...]:
    """Each resource once, ordered by time then reference."""
    seen: dict[str, Evidence] = {}
    for resource in resources:
        item = describe(resource)
        seen.setdefault(item.reference, item)
    return tuple(sorted(seen.values(), key=lambda e: (e.when is None, str(e.when or ""), e.reference)))
