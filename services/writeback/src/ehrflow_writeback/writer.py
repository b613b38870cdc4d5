"""Writing an approved draft to its organization's EHR: the resource, then its Provenance.

Both writes are conditional creates keyed on the draft tag (``If-None-Exist: _tag=…|<draft id>``), so a
redelivered decision, or a crash between the two writes, never writes twice: the second attempt finds
what the first one wrote.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ehrflow_contracts import DraftProposed
from ehrflow_contracts.fhir import AI_ASSISTED, SYSTEM_DRAFT, SYSTEM_TAG, TAG_GENERATED, invalid_fields, validate
from ehrflow_runtime.errors import PermanentError
from ehrflow_runtime.organizations import WRITABLE_TYPES

PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
MODEL_SYSTEM = "https://ehrflow.dev/fhir/model"
FINAL_STATUS: dict[str, dict[str, str]] = {
    "RiskAssessment": {"status": "final"},
    "Observation": {"status": "final"},
    "DocumentReference": {"docStatus": "final"},
    "Flag": {"status": "active"},
    "Task": {"status": "requested"},
    "Communication": {"status": "completed"},
}
"""What approval changes in a drafted resource of each type (``WRITABLE_TYPES``): a clinician has verified it
(a score or a document becomes final, a flag active, a task requested, a message sent)."""


class FhirWriter(Protocol):
    async def create(self, resource: dict[str, Any], *, if_none_exist: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Written:
    resource: str
    provenance: str


def _tags(draft_id: str) -> list[dict[str, str]]:
    return [{"system": SYSTEM_TAG, "code": TAG_GENERATED}, {"system": SYSTEM_DRAFT, "code": draft_id}]


class NotEditable(PermanentError):
    """An edit of a draft whose output has no text to revise."""


def editable_text(resource: dict[str, Any]) -> str | None:
    """The text a reviewer may revise: a DocumentReference's first inline text attachment, decoded; None for
    other outputs (scores are approved or rejected, not rewritten)."""
    if resource.get("resourceType") != "DocumentReference":
        return None
    for content in resource.get("content") or []:
        attachment = content.get("attachment") or {}
        if str(attachment.get("contentType", "")).startswith("text/") and "data" in attachment:
            return base64.b64decode(attachment["data"]).decode("utf-8", errors="replace")
    return None


def with_edit(resource: dict[str, Any], text: str) -> dict[str, Any]:
    """``resource`` with the reviewer's revision in place of the drafted text."""
    if editable_text(resource) is None:
        raise NotEditable(f"a {resource.get('resourceType')} has no text to edit")
    revised = copy.deepcopy(resource)
    for content in revised["content"]:
        attachment = content.get("attachment") or {}
        if str(attachment.get("contentType", "")).startswith("text/") and "data" in attachment:
            attachment["data"] = base64.b64encode(text.encode()).decode()
            attachment.pop("hash", None)
            attachment.pop("size", None)
            break
    return revised


class NotWritable(PermanentError):
    """A draft of a type writeback does not write."""


def final_resource(draft: DraftProposed, edited_text: str | None = None) -> dict[str, Any]:
    """The draft as it is written: final, tagged (echo detection, idempotency), labelled AI-assisted, with the
    reviewer's revision of its text when there is one; checked against the FHIR R4 models before it is sent."""
    if draft.resource.get("resourceType") not in WRITABLE_TYPES:
        raise NotWritable(f"a {draft.resource.get('resourceType')} is not a type writeback writes")
    resource = copy.deepcopy(draft.resource if edited_text is None else with_edit(draft.resource, edited_text))
    resource.pop("id", None)
    resource.update(FINAL_STATUS.get(resource.get("resourceType", ""), {}))
    meta = resource.setdefault("meta", {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("system") not in (SYSTEM_TAG, SYSTEM_DRAFT)] + _tags(
        draft.draft_id
    )
    labels = meta.setdefault("security", [])
    if not any((s.get("system"), s.get("code")) == (AI_ASSISTED["system"], AI_ASSISTED["code"]) for s in labels):
        labels.append(AI_ASSISTED)
    if problem := invalid_fields(resource, str(resource["resourceType"])):
        raise NotWritable(f"the drafted resource is {problem}")
    return validate(resource)


def provenance(
    draft: DraftProposed, target: str, reviewer: str, decided_at: datetime, *, edited: bool = False
) -> dict[str, Any]:
    """Who made it: the model as author, the reviewing clinician as verifier; the inputs as sources. When the
    clinician revised the text, they are an author too, and the draft as proposed is the entity revised."""
    revision: list[dict[str, Any]] = []
    reviser: list[dict[str, Any]] = []
    if edited:
        reviser = [{"type": {"coding": [{"system": PARTICIPANT, "code": "author"}]}, "who": {"reference": reviewer}}]
        revision = [
            {
                "role": "revision",
                "what": {
                    "identifier": {"system": SYSTEM_DRAFT, "value": draft.draft_id},
                    "display": "the AI draft as proposed, revised by the reviewer",
                },
            }
        ]
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
                *reviser,
            ],
            "entity": [*({"role": "source", "what": {"reference": ref}} for ref in draft.basis), *revision],
        }
    )


async def write_approved(
    fhir: FhirWriter, draft: DraftProposed, reviewer: str, decided_at: datetime, edited_text: str | None = None
) -> Written:
    condition = f"_tag={SYSTEM_DRAFT}|{draft.draft_id}"
    resource = final_resource(draft, edited_text)
    created = await fhir.create(resource, if_none_exist=condition)
    target = f"{created['resourceType']}/{created['id']}"
    record = provenance(draft, target, reviewer, decided_at, edited=edited_text is not None)
    prov = await fhir.create(record, if_none_exist=condition)
    return Written(resource=target, provenance=f"Provenance/{prov['id']}")
