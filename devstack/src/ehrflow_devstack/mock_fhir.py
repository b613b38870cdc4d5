"""A minimal FHIR API and auth token API as an ``httpx.MockTransport`` handler, for unit tests only.

It serves reads and the searches inference makes from an in-memory list of resources, issues tokens
from ``/internal/v1/tokens``, and records every request so tests can check what was (not) sent.
Integration and end-to-end tests use the real sandbox EHR instead.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from ehrflow_contracts import NotificationReceived
from ehrflow_contracts.events import Reference
from ehrflow_devstack.scenario import Vitals, panel, vital_observations
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.tokens import TokenClient


@dataclass
class MockFhir:
    base: str = "https://ehr.example.org/fhir"
    resources: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    fail_next: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    """Status codes (or status and headers) to answer FHIR requests with, one per request, before behaving
    normally."""
    down: dict[str, str] | None = None
    """While set, every FHIR request is answered 503 with these headers (``{"Retry-After": "2"}``)."""
    tokens_issued: int = 0

    def add(self, *resources: dict[str, Any]) -> None:
        for r in resources:
            r.setdefault("id", str(uuid.uuid4()))
            r.setdefault("meta", {}).setdefault("versionId", "1")
            self.resources.append(r)

    def chart_vitals(self, vitals: Vitals, when: datetime, patient: str = "Patient/p1") -> dict[str, Any]:
        """Chart a vital-signs set two minutes before ``when`` and its panel at ``when``; returns the panel
        (the NEWS2 trigger)."""
        observations = vital_observations(patient, vitals, (when - timedelta(minutes=2)).isoformat())
        self.add(*observations)
        trigger = panel(patient, [f"Observation/{o['id']}" for o in observations], when.isoformat())
        self.add(trigger)
        return trigger

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, organization: Organization, feature: str = "news2", service: str = "inference") -> FhirClient:
        """A real FhirClient (and TokenClient) whose HTTP goes to this mock."""
        http = httpx.AsyncClient(transport=self.transport())
        tokens = TokenClient(http, base_url="http://auth", service_name=service, credential=SecretStr("credential"))
        return FhirClient(http, tokens, organization, feature)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/internal/v1/tokens":
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"token-{self.tokens_issued}",
                    "token_type": "bearer",
                    "expires_at": 4102444800,
                    "scope": "system/*.read",
                },
            )
        if self.down is not None:
            return httpx.Response(503, headers=self.down, json={"resourceType": "OperationOutcome"})
        if self.fail_next:
            failure = self.fail_next.pop(0)
            status, headers = failure if isinstance(failure, tuple) else (failure, {})
            return httpx.Response(status, headers=headers, json={"resourceType": "OperationOutcome"})
        path = request.url.path.removeprefix(httpx.URL(self.base).path).strip("/").split("/")
        if request.method == "GET" and len(path) == 2:
            found = [r for r in self.resources if r["resourceType"] == path[0] and r["id"] == path[1]]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={})
        if request.method == "GET" and len(path) == 1:
            patient, only = request.url.params.get("patient"), request.url.params.get("_id")
            matches = [
                r
                for r in self.resources
                if r["resourceType"] == path[0]
                and (only is None or r["id"] == only)
                and (patient is None or (r.get("subject") or r.get("for") or {}).get("reference") == patient)
            ]
            return httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": r, "search": {"mode": "match"}} for r in matches],
                },
            )
        if request.method == "POST" and len(path) == 1:
            condition = request.headers.get("if-none-exist", "")
            if condition.startswith("_tag="):  # a conditional create keyed on a tag: the match, if there is one
                system, _, code = condition.removeprefix("_tag=").partition("|")
                for r in self.resources:
                    tags = {(t.get("system"), t.get("code")) for t in r.get("meta", {}).get("tag", [])}
                    if r["resourceType"] == path[0] and (system, code) in tags:
                        return httpx.Response(200, json=r)
            body = json.loads(request.content)
            self.add(body)
            return httpx.Response(201, json=body)
        return httpx.Response(400, json={})


def event_about(resource: dict[str, Any], *, full: bool = True, **fields: Any) -> NotificationReceived:
    """Organization 1's notification event about ``resource`` (its payload included when ``full``)."""
    ref = f"{resource['resourceType']}/{resource['id']}"
    return NotificationReceived(
        **{
            "organization_id": "org1",
            "correlation_id": "c",
            "flavour": "r4-backport",
            "notification_type": "event-notification",
            "content_level": "full-resource" if full else "id-only",
            "focus": Reference(reference=ref, original=ref),
            "resource": resource if full else None,
            "patient": (resource.get("subject") or {}).get("reference"),
            "dedupe_key": ref,
            **fields,
        }
    )
