"""Patient summary for tumor-board preparation: an OpenAI-compatible chat model summarizes the oncology
record, every statement citing the resources it came from, drafted as a DocumentReference for review.

The record (``record.py``) lists each input resource on a line led by its reference; the request's JSON
Schema lets a source be only one of those references, and the answer is checked again here, so a statement
citing anything else is the outcome ``invalid-model-output``, never a draft. The record is capped by
``parameters.max_record_chars``; a longer one is the outcome ``budget-exceeded``. Nothing of the record
reaches a log line.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ehrflow_contracts import NotificationReceived
from ehrflow_contracts.fhir import AI_ASSISTED, checked, invalid_fields
from ehrflow_inference.contract import Contract
from ehrflow_inference.evaluation import Drafted, FhirReader, Outcome
from ehrflow_inference.evidence import describe_all
from ehrflow_inference.fhir_values import instant, versioned
from ehrflow_inference.inputs import gather
from ehrflow_inference.models import InvalidModelOutput, ModelClient
from ehrflow_inference.workflows.base import Workflow
from ehrflow_inference.workflows.tumor_board.record import line, note_text, reference

SYSTEM = (
    "You prepare a patient's case for a multidisciplinary tumor board. From the record below, write short "
    "factual statements: diagnosis and stage, pathology and imaging findings, treatment so far, current "
    "medications, relevant labs, and open questions. Every statement must list in 'sources' the bracketed "
    "references of the record lines it rests on, and nothing that is not in the record may be stated."
)


class TumorBoardParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_record_chars: int = Field(default=6000, ge=500, description="The record's size limit in the prompt.")
    max_note_chars: int = Field(default=1500, ge=100, description="Characters of each note's text included.")


class TumorBoardContract(Contract):
    parameters: TumorBoardParameters = TumorBoardParameters()

    @field_validator("output")
    @classmethod
    def _a_document(cls, value: Any) -> Any:
        if value.resource_type != "DocumentReference":
            raise ValueError("the tumor-board summary is a DocumentReference")
        return value


def _patient_of(resource: dict[str, Any]) -> str:
    """``Task.for``, or an Appointment's Patient participant."""
    subject = resource.get("for")
    if isinstance(subject, dict) and str(subject.get("reference", "")).startswith("Patient/"):
        return str(subject["reference"])
    for participant in resource.get("participant") or []:
        actor = participant.get("actor") if isinstance(participant, dict) else None
        if isinstance(actor, dict) and str(actor.get("reference", "")).startswith("Patient/"):
            return str(actor["reference"])
    return ""


def _within(resource: dict[str, Any], since: datetime | None) -> bool:
    """Dated on or after ``since``; a resource without a readable date is kept (the look-back cannot judge it)."""
    if since is None:
        return True
    for key in ("effectiveDateTime", "issued", "date", "performedDateTime"):
        moment = instant(resource.get(key))
        if moment is not None:
            return moment >= since
    return True


def answer_schema(schema: dict[str, Any] | None, references: list[str]) -> dict[str, Any]:
    """The contract's output schema with each source narrowed to the record's references (the server's
    structured output then cannot cite anything else)."""
    narrowed = copy.deepcopy(schema or {})
    item = narrowed.get("properties", {}).get("statements", {}).get("items", {})
    sources = item.get("properties", {}).get("sources")
    if isinstance(sources, dict):
        sources["items"] = {"enum": references}
    return narrowed


class TumorBoard(Workflow[TumorBoardContract]):
    name = "tumor-board"
    contract_model = TumorBoardContract
    contract_file: ClassVar[Path] = Path(__file__).with_name("contract.yaml")

    def is_trigger(self, resource: dict[str, Any], contract: TumorBoardContract) -> bool:
        """A Task by its ``code``; an Appointment by its ``serviceType`` or ``appointmentType``."""
        if resource.get("resourceType") == "Appointment":
            concepts = [*(resource.get("serviceType") or []), resource.get("appointmentType")]
            probe = {
                "resourceType": "Appointment",
                "code": {"coding": [c for x in concepts if isinstance(x, dict) for c in x.get("coding") or []]},
            }
            return super().is_trigger(probe, contract)
        return super().is_trigger(resource, contract)

    async def draft(
        self, event: NotificationReceived, contract: TumorBoardContract, fhir: FhirReader, model: ModelClient
    ) -> Drafted | Outcome | None:
        assert event.focus is not None and event.focus.reference is not None
        trigger = event.resource or await fhir.read(event.focus.reference)
        kind = contract.trigger.resource_type
        if problem := invalid_fields(trigger, kind):
            return Outcome("invalid-input", f"the trigger is {problem}")
        if not self.is_trigger(trigger, contract) or trigger.get("status") in ("cancelled", "entered-in-error"):
            return None
        patient = _patient_of(trigger)
        if not patient:
            return Outcome("insufficient-data", "the trigger names no patient", None, ("for",))
        now = datetime.now(UTC)
        found = await gather(contract, fhir, patient)
        lines: list[str] = []
        used: list[dict[str, Any]] = []
        for name, resources in found.items():
            hours = contract.inputs[name].lookback_hours
            since = now - timedelta(hours=hours) if hours else None
            for resource in resources:
                if not isinstance(resource.get("id"), str) or not _within(resource, since):
                    continue
                text = line(resource)
                if resource["resourceType"] == "DocumentReference":
                    note = await note_text(resource, fhir)
                    if note:
                        text += f": {note[: contract.parameters.max_note_chars]}"
                lines.append(text)
                used.append(resource)
        record = "\n".join(lines)
        if len(record) > contract.parameters.max_record_chars:
            return Outcome(
                "budget-exceeded",
                f"the record is {len(record)} characters; the contract allows {contract.parameters.max_record_chars}",
                patient,
            )
        references = [reference(r) for r in used]
        answer = await model.predict(
            {
                "system": SYSTEM,
                "user": f"Record of {patient}:\n{record}",
                "schema": answer_schema(contract.model.output_schema, references),
            }
        )
        statements = answer["statements"]
        known = set(references)
        for statement in statements:
            if not set(statement["sources"]) <= known:
                raise InvalidModelOutput("a statement cites a resource that is not in the record")
        cited = sorted({s for statement in statements for s in statement["sources"]})
        markdown = "\n".join(f"- {s['text']} [{', '.join(s['sources'])}]" for s in statements)
        versions = {reference(r): versioned(r) for r in used}
        return Drafted(
            patient=patient,
            resource=_document(patient, now, markdown, cited, model),
            basis=tuple(sorted(versions.values())),  # the whole record: the same record, the same draft id
            occurred_at=now,
            summary={"statements": len(statements), "cited": len(cited), "record_lines": len(lines)},
            evidence=describe_all([r for r in used if reference(r) in cited]),
        )


def _document(patient: str, when: datetime, markdown: str, cited: list[str], model: ModelClient) -> dict[str, Any]:
    return checked(
        {
            "resourceType": "DocumentReference",
            "meta": {"security": [AI_ASSISTED]},
            "status": "current",
            "docStatus": "preliminary",
            "type": {"text": "Tumor board preparation summary"},
            "subject": {"reference": patient},
            "date": when.isoformat(),
            "description": f"Drafted by {model.spec.name} {model.spec.version}; requires clinician review.",
            "content": [
                {
                    "attachment": {
                        "contentType": "text/markdown",
                        "data": base64.b64encode(markdown.encode()).decode(),
                        "title": "Tumor board preparation summary",
                    }
                }
            ],
            "context": {"related": [{"reference": ref} for ref in cited]},
        }
    )
