"""Gathering a workflow's inputs: the contract's named FHIR searches for one patient, within its budget.

Each query is a search restricted to the patient, following ``next`` links (only under the organization's
FHIR base: ``FhirClient.search_all``) up to ``budget.max_pages``. The budget counts resources and their JSON
bytes over all queries; going over it ends the evaluation with the outcome ``budget-exceeded`` (a model
must not see a silently truncated record). A required query without a match ends it with
``insufficient-data`` naming the input; a 403 ends it with ``forbidden`` naming the scope the read needs.
"""

from __future__ import annotations

import json
from typing import Any

from ehrflow_inference.contract import Contract
from ehrflow_inference.evaluation import FhirReader, Outcome, OutcomeError
from ehrflow_runtime.errors import UpstreamRejected


async def gather(contract: Contract, fhir: FhirReader, patient: str) -> dict[str, list[dict[str, Any]]]:
    """Every input of ``contract`` for ``patient`` (``Patient/id``), by name, in the contract's order."""
    budget = contract.budget
    found: dict[str, list[dict[str, Any]]] = {}
    resources = size = 0
    for name, query in contract.inputs.items():
        try:
            matches, _complete, _pages = await fhir.search_all(
                query.resource_type, query.search(patient), max_pages=budget.max_pages
            )
        except UpstreamRejected as exc:
            raise OutcomeError(refused(exc, query.resource_type, patient, input_name=name)) from None
        resources += len(matches)
        size += sum(len(json.dumps(r, separators=(",", ":"))) for r in matches)
        if resources > budget.max_resources or size > budget.max_bytes:
            raise OutcomeError(
                Outcome(
                    "budget-exceeded",
                    f"input '{name}' took the evaluation over its budget ({resources} resources, {size} bytes; "
                    f"at most {budget.max_resources} and {budget.max_bytes})",
                    patient=patient,
                )
            )
        if query.required and not matches:
            raise OutcomeError(
                Outcome("insufficient-data", f"required input '{name}' found nothing", patient, missing=(name,))
            )
        found[name] = matches
    return found


def refused(exc: UpstreamRejected, resource_type: str | None, patient: str | None, *, input_name: str = "") -> Outcome:
    """The outcome of a read the EHR refused: 403 names the scope, 404/410 says the resource is gone; any
    other refusal is raised again (the consumer dead-letters it)."""
    resource_type = resource_type or exc.resource_type or "Resource"
    what = f"input '{input_name}' ({resource_type})" if input_name else resource_type
    if exc.status == 403:
        return Outcome(
            "forbidden",
            f"the EHR refused {what} (403): the token lacks a scope such as system/{resource_type}.read",
            patient,
            missing=(f"system/{resource_type}.read",),
        )
    if exc.status in (404, 410):
        return Outcome("not-found", f"{what} is gone at the EHR ({exc.status})", patient)
    raise exc
