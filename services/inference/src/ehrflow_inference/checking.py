"""Running the contract check against each organization's EHR, and its report (``capabilities`` holds the
rules; this module does the I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client import Gauge

from ehrflow_inference.capabilities import scope_problems, statement_problems
from ehrflow_inference.enabled import Enabled
from ehrflow_runtime.organizations import Organization, Registry
from ehrflow_runtime.outcomes import FHIR_JSON

CONTRACT_OK = Gauge(
    "ehrflow_inference_contract_ok",
    "1 when a workflow's contract matched its organization's EHR at the last check, 0 when it did not.",
    ["organization", "workflow"],
)


@dataclass
class OrgReport:
    organization: Organization
    unreachable: str | None = None
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Problems by workflow name (an empty list: the workflow's contract matches)."""

    @property
    def ok(self) -> bool:
        return self.unreachable is None and not any(self.problems.values())


async def fetch_statement(http: httpx.AsyncClient, organization: Organization) -> dict[str, object]:
    """The EHR's CapabilityStatement: ``GET [base]/metadata``, which FHIR servers answer without a token."""
    response = await http.get(f"{organization.fhir_base_url}/metadata", headers={"Accept": FHIR_JSON})
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("the metadata answer is not a JSON object")
    return body


async def check_organization(
    organization: Organization, enabled: tuple[Enabled, ...], http: httpx.AsyncClient
) -> OrgReport:
    report = OrgReport(organization)
    if not enabled:
        return report
    try:
        statement = await fetch_statement(http, organization)
    except (httpx.HTTPError, ValueError) as exc:
        report.unreachable = f"cannot read {organization.fhir_base_url}/metadata ({type(exc).__name__}: {exc})"
        return report
    for entry in enabled:
        problems = statement_problems(statement, entry.contract) + scope_problems(organization, entry.contract)
        report.problems[entry.workflow.name] = problems
        CONTRACT_OK.labels(organization.id, entry.workflow.name).set(0 if problems else 1)
    return report


async def check_all(
    registry: Registry,
    enabled: dict[str, tuple[Enabled, ...]],
    http_for: Callable[[Organization], httpx.AsyncClient],
    *,
    only: str | None = None,
) -> list[OrgReport]:
    orgs = [org for org in registry if only is None or org.id == only]
    return list(await asyncio.gather(*(check_organization(o, enabled.get(o.id, ()), http_for(o)) for o in orgs)))


def render(reports: list[OrgReport]) -> str:
    """The report a person reads: one block per organization, one line per problem."""
    lines: list[str] = []
    for report in reports:
        org = report.organization
        lines.append(f"{org.id} ({org.name}) {org.fhir_base_url}")
        if report.unreachable:
            lines.append(f"  NOT CHECKED: {report.unreachable}")
        elif not report.problems:
            lines.append("  no workflows enabled")
        for workflow, problems in report.problems.items():
            lines.append(f"  {workflow}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            lines.extend(f"    - {p}" for p in problems)
    return "\n".join(lines)
