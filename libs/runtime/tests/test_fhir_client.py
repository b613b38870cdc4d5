"""The organization-bound FHIR client: tokens stay in their organization; a 401 refreshes once."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from pydantic import SecretStr

from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.tokens import TokenClient


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


@pytest.mark.parametrize(
    "path",
    [
        "Observation/../../../tenant-b/fhir/Observation/1",  # starts with the base, leaves it once resolved
        "Observation/../../other/Patient/1",
        "Observation/..",
        "Observation/%2e%2e/%2e%2e/other/Patient/1",  # encoded dots: servers disagree on decoding them
        "Observation/x%2f..%2f..%2fother",
        "Observation/x\\..\\other",
        "../../../org1/fhir/Observation/x",
        "https://ehr.example.org/fhir/Observation/../../other/Patient/1",
        "https://user@ehr.example.org/fhir/Patient/1",
    ],
)
async def test_dot_segments_and_encoded_separators_cannot_leave_the_base(organization: Organization, path: str) -> None:
    """httpx resolves dot segments before it sends, so a prefix test of the string let a token out; the
    check is on the URL httpx sends, and paths that are not FHIR ``Type/id`` are refused outright."""
    ehr = MockFhir()
    fhir = _client(ehr, organization)
    with pytest.raises(UpstreamRejected):
        await fhir.read(path)
    assert ehr.requests == [], "nothing is sent, not even a token request"


async def test_operation_paths_and_queries_under_the_base_are_sent_as_written(organization: Organization) -> None:
    ehr = MockFhir()
    fhir = _client(ehr, organization)
    url = fhir.url("Subscription/s-1/$events?eventsSinceNumber=3&eventsUntilNumber=4")
    assert url == "https://ehr.example.org/fhir/Subscription/s-1/$events?eventsSinceNumber=3&eventsUntilNumber=4"
    assert fhir.url("Observation?patient=Patient/1") == "https://ehr.example.org/fhir/Observation?patient=Patient/1"


def _answering(organization: Organization, response: httpx.Response) -> tuple[FhirClient, list[httpx.Request]]:
    """A client whose EHR answers every FHIR request with ``response``."""
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/internal/v1/tokens":
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_at": 4102444800})
        sent.append(request)
        return response

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    tokens = TokenClient(http, base_url="http://auth", service_name="writeback", credential=SecretStr("c"))
    return FhirClient(http, tokens, organization, "news2"), sent


async def test_a_create_answered_201_without_a_body_is_located_by_its_location_header(
    organization: Organization,
) -> None:
    location = "https://ehr.example.org/fhir/RiskAssessment/ra-7/_history/1"
    fhir, sent = _answering(organization, httpx.Response(201, headers={"Location": location}))
    created = await fhir.create({"resourceType": "RiskAssessment", "status": "final"}, if_none_exist="_tag=x|y")
    assert created == {"resourceType": "RiskAssessment", "id": "ra-7"}
    assert len(sent) == 1


async def test_a_create_answered_without_a_body_or_location_is_a_permanent_refusal(organization: Organization) -> None:
    fhir, _ = _answering(organization, httpx.Response(201))
    with pytest.raises(UpstreamRejected, match="neither the resource nor a Location"):
        await fhir.create({"resourceType": "RiskAssessment", "status": "final"})


@pytest.mark.parametrize(
    ("body", "content_type", "what"),
    [
        (b"<html>gateway</html>", "text/html", "not JSON"),
        (b'[{"resourceType": "Patient"}]', "application/fhir+json", "not a JSON object"),
    ],
)
async def test_a_2xx_that_is_not_a_json_object_is_a_permanent_refusal(
    organization: Organization, body: bytes, content_type: str, what: str
) -> None:
    fhir, _ = _answering(organization, httpx.Response(200, content=body, headers={"Content-Type": content_type}))
    with pytest.raises(UpstreamRejected, match=what) as caught:
        await fhir.read("Patient/p1")
    assert caught.value.status == 200 and "gateway" not in str(caught.value)
