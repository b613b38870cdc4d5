"""FHIR OperationOutcome answers: every error ehrflow gives an EHR or a client is one of these."""

from __future__ import annotations

from typing import Literal

from starlette.responses import JSONResponse

FHIR_JSON = "application/fhir+json"

Severity = Literal["fatal", "error", "warning", "information"]


def operation_outcome(
    status: int, code: str, diagnostics: str, *, severity: Severity = "error", headers: dict[str, str] | None = None
) -> JSONResponse:
    """``code`` is from the FHIR IssueType value set (invalid, security, too-long, not-supported, transient…)."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)
