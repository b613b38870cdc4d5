"""FHIR OperationOutcome answers: every error ehrflow gives an EHR or a client is one of these."""

from __future__ import annotations

from typing import Literal

from pydantic_core import to_json
from starlette.responses import Response

FHIR_JSON = "application/fhir+json"

Severity = Literal["fatal", "error", "warning", "information"]


def outcome_json(code: str, diagnostics: str, *, severity: Severity = "error") -> bytes:
    """The OperationOutcome's compact JSON. ``code`` is from the FHIR IssueType value set (invalid, security,
    too-long, not-supported, transient…)."""
    return to_json(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
        }
    )


def operation_outcome(
    status: int, code: str, diagnostics: str, *, severity: Severity = "error", headers: dict[str, str] | None = None
) -> Response:
    """An OperationOutcome answer (see ``outcome_json``)."""
    return Response(outcome_json(code, diagnostics, severity=severity), status, headers, media_type=FHIR_JSON)
