"""The organization-bound FHIR client: tokens stay in their organization; a 401 refreshes once."""

from __future__ import annotations

import hashlib
import json

import pytest

from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Organization


def _client(ehr: MockFhir, org: Organization) -> FhirClient:
    return ehr.client(org)


async def test_reads_with_a_bearer_token_from_auth(organization: Organization) -> None:
    ehr = MockFhir()
    ehr.add({"resourceType": "Patient", "id": "p1"})
    fhir = _client(ehr, organization)
    assert (await fhir.read("Patient/p1"))["id"] == "p1"
    token_call, read = ehr.requests
    assert (
        token_call.headers["x-ehrflow-service"] == "inference"
        and token_call.headers["authorization"] == "Bearer credential"
    )
    assert read.headers["authorization"] == "Bearer token-1"
    assert json.loads(token_call.content)["feature"] == "news2"


async def test_a_401_invalidates_the_token_and_retries_once(organization: Organization) -> None:
    ehr = MockFhir(fail_next=[401])
    ehr.add({"resourceType": "Patient", "id": "p1"})
    fhir = _client(ehr, organization)
    assert (await fhir.read("Patient/p1"))["id"] == "p1"
    assert ehr.tokens_issued == 2
    assert ehr.requests[-1].headers["authorization"] == "Bearer token-2"
    first, second = (json.loads(r.content) for r in ehr.requests if r.url.path == "/internal/v1/tokens")
    assert first["rejected_token_sha256"] is None
    assert second["rejected_token_sha256"] == hashlib.sha256(b"token-1").hexdigest()


async def test_a_second_401_is_an_error(organization: Organization) -> None:
    fhir = _client(MockFhir(fail_next=[401, 401]), organization)
    with pytest.raises(UpstreamRejected) as caught:
        await fhir.read("Patient/p1")
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, UpstreamUnavailable), (429, UpstreamUnavailable), (403, UpstreamRejected), (404, UpstreamRejected)],
)
async def test_status_mapping(organization: Organization, status: int, error: type[Exception]) -> None:
    fhir = _client(MockFhir(fail_next=[status]), organization)
    with pytest.raises(error):
        await fhir.read("Patient/p1")


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example.net/fhir/Patient/1",
        "https://ehr.example.org/other/Patient/1",
        "https://ehr.example.org/fhir-evil/Patient/1",
        "http://ehr.example.org/fhir/Patient/1",
    ],
)
async def test_token_never_leaves_the_organizations_base(organization: Organization, url: str) -> None:
    ehr = MockFhir()
    fhir = _client(ehr, organization)
    with pytest.raises(UpstreamRejected, match="outside its FHIR base"):
        await fhir.read(url)
    assert ehr.requests == []
