"""Writing an approved draft to its organization's EHR: the resource, then its Provenance.

Both writes are conditional creates keyed on the draft tag (``If-None-Exist: _tag=…|<draft id>``), so a
redelivered decision, or a crash between the two writes, never writes twice: the second attempt finds
what the first one wrote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ehrflow_contracts import DraftProposed
from ehrflow_contracts.fhir import AI_ASSISTED, SYSTEM_DRAFT, SYSTEM_TAG, TAG_GENERATED, validate

PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
MODEL_SYSTEM = "https://ehrflow.dev/fhir/model"
FINAL_STATUS: dict[str, dict[str, str]] = {
    "RiskAssessment": {"status": "final"},
    "Observation": {"status": "final"},
    "DocumentReference": {"docStatus": "final"},
}
"""What approval changes in a drafted resource of each type: a clinician has verified it. Other types
(Flag, Task, Communication) carry the status their workflow drafted."""


class FhirWriter(Protocol):
    async def create(self, resource: dict[str, Any], *, if_none_exist: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Written:
    resource: str
    provenance: str


def _tags(draft_id: str) -> list[dict[str, str]]:
    return [{"system": SYSTEM_TAG, "code": TAG_GENERATED}, {"system": SYSTEM_DRAFT, "code": draft_id}]


def final_resource(draft: DraftProposed) -> dict[str, Any]:
    """The draft as it is written: final, tagged (echo detection, idempotency), labelled AI-assisted."""
    resource = copy.deepcopy(draft.resource)
    resource.pop("id", None)
    resource.update(FINAL_STATUS.get(resource.get("resourceType", ""), {}))
    meta = resource.setdefault("meta", {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("system") not in (SYSTEM_TAG, SYSTEM_DRAFT)] + _tags(
        draft.draft_id
    )
    labels = meta.setdefault("security", [])
    if not any((s.get("system"), s.get("code")) == (AI_ASSISTED["system"], AI_ASSISTED["code"]) for s in labels):
        labels.append(AI_ASSISTED)
    return validate(resource)


def provenance(draft: DraftProposed, target: str, reviewer: str, decided_at: datetime) -> dict[str, Any]:
    """Who made it: the model as author, the reviewing clinician as verifier; the inputs as sources."""
    return validate(
        {
            "resourceType": "Provenance",
            "meta": {"tag": _tags(draft.draft_id), "security": [AI_ASSISTED]},
            "target": [{"reference": target}],
            "recorded": decided_at.isoformat(),
            "activity": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]
            },
            "agent": [
                {
                    "type": {"coding": [{"system": PARTICIPANT, "code": "author"}]},
                    "who": {
                        "identifier": {"system": MODEL_SYSTEM, "value": f"{draft.model.name}@{draft.model.version}"},
                        "display": f"{draft.model.name} {draft.model.version} (AI model)",
                    },
                },
                {"type": {"coding": [{"system": PARTICIPANT, "code": "verifier"}]}, "who": {"reference": reviewer}},
            ],
            "entity": [{"role": "source", "what": {"reference": ref}} for ref in draft.basis],
        }
    )


async def write_approved(fhir: FhirWriter, draft: DraftProposed, reviewer: str, decided_at: datetime) -> Written:
    condition = f"_tag={SYSTEM_DRAFT}|{draft.draft_id}"
    resource = final_resource(draft)
    created = await fhir.create(resource, if_none_exist=condition)
    target = f"{created['resourceType']}/{created['id']}"
    prov = await fhir.create(provenance(draft, target, reviewer, decided_at), if_none_exist=condition)
    return Written(resource=target, provenance=f"Provenance/{prov['id']}")
