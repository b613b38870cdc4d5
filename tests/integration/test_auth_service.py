"""The auth service against the sandbox EHRs: RS384 and ES384 organizations get tokens that read FHIR."""

from __future__ import annotations

import httpx
import pytest

from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def _token(stack: Stack, org: str, service: str = "inference", credential: str | None = None) -> httpx.Response:
    assert stack.config
    return httpx.post(
        f"{stack.urls['auth']}/internal/v1/tokens",
        json={"organization": org},
        timeout=20,
        headers={
            "Authorization": f"Bearer {credential or stack.config.service_credential(service)}",
            "X-Ehrflow-Service": service,
        },
    )


@pytest.mark.parametrize(("org", "alg", "kty"), [("org1", "RS384", "RSA"), ("org2", "ES384", "EC")])
def test_jwks_is_public_and_cacheable(stack: Stack, org: str, alg: str, kty: str) -> None:
    response = httpx.get(f"{stack.urls['auth']}/orgs/{org}/jwks.json")
    assert response.status_code == 200 and "max-age" in response.headers["cache-control"]
    [key] = response.json()["keys"]
    assert (key["alg"], key["kty"], key["kid"]) == (alg, kty, f"{org}-key-1")
    assert "d" not in key


@pytest.mark.parametrize("org", ["org1", "org2"])
def test_tokens_read_their_own_organizations_fhir(stack: Stack, org: str) -> None:
    response = _token(stack, org)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and "system/*.read" in body["scope"]
    fhir = httpx.get(
        f"{stack.ehrs[org].url}/Patient",
        params={"_count": "1"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert fhir.status_code == 200
    assert _token(stack, org).json()["access_token"] == body["access_token"]  # served from the shared cache


def test_one_organizations_token_is_refused_by_the_other(stack: Stack) -> None:
    token = _token(stack, "org1").json()["access_token"]
    response = httpx.get(f"{stack.ehrs['org2'].url}/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("service", "credential", "status"),
    [
        ("inference", "wrong", 401),
        ("nobody", "x", 401),
        ("writeback", None, 200),
    ],
)
def test_internal_api_requires_a_service_credential(
    stack: Stack, service: str, credential: str | None, status: int
) -> None:
    assert _token(stack, "org1", service, credential).status_code == status


def test_unknown_organization(stack: Stack) -> None:
    assert _token(stack, "org9").status_code == 404
