"""The FHIR release ehrflow speaks to EHRs: R4 (4.0.1), modelled by ``fhir.resources.R4B``.

fhir.resources has no separate R4 package; its R4B models validate R4 JSON for the resources we write
(RiskAssessment, Provenance, DocumentReference). Import FHIR models through this module only, so the
release is pinned in one place.
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

FHIR_VERSION = "4.0.1"

SYSTEM_TAG = "https://ehrflow.dev/fhir/CodeSystem/tag"
"""Code system of ehrflow's own ``meta.tag`` codes."""
TAG_GENERATED = "ehrflow-generated"
"""``meta.tag`` on everything ehrflow writes, so ingest can drop the echo of its own writes."""
SYSTEM_DRAFT = "https://ehrflow.dev/fhir/CodeSystem/draft"
"""``meta.tag`` system whose code is the draft id: the key of idempotent (conditional) writes."""
AI_ASSISTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
"""Security label marking content produced with AI assistance."""


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource against the pinned FHIR models and return its JSON form.

    Costly (~1 ms): use it where it pays (before writing to an EHR), not on ingest's hot path.
    """
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    result: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True))
    return result


def checked(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` itself once the pinned FHIR models accept it (``ValueError`` naming the fields otherwise).
    For resources ehrflow builds and sends on: ``validate``'s JSON round trip, which normalizes what a
    sender wrote, is most of its cost (a NEWS2 RiskAssessment: 1.1 ms validated and dumped, 0.26 ms
    validated) and changes nothing in a resource built to the models' rules; writeback validates again
    before writing."""
    if problem := invalid_fields(resource, str(resource.get("resourceType"))):
        raise ValueError(f"ehrflow built {problem}")
    return resource


def invalid_fields(resource: Any, resource_type: str) -> str | None:
    """Why ``resource`` is not a valid ``resource_type`` by the pinned FHIR models, naming the fields and
    never their values (a value may be PHI); None when it is valid. Costly like ``validate``."""
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        return f"not a {resource_type} resource"
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or resource_type for e in exc.errors()})
        return f"not a valid {resource_type} at {', '.join(fields[:10])}"
    return None


def is_generated_by_ehrflow(resource: dict[str, Any] | None) -> bool:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return isinstance(tags, list) and any(
        isinstance(t, dict) and t.get("system") == SYSTEM_TAG and t.get("code") == TAG_GENERATED for t in tags
    )
