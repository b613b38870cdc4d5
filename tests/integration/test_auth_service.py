"""The auth service against the sandbox EHRs: RS384 and ES384 organizations get tokens that read FHIR,
and the service policy keeps every caller to its own organizations and features."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ehrflow_contracts import topics
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def _token(
    url: str, stack: Stack, org: str, feature: str = "news2", service: str = "inference", credential: str | None = None
) -> httpx.Response:
    assert stack.config
    return httpx.post(
        f"{url}/internal/v1/tokens",
        json={"organization": org, "feature": feature},
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
    response = _token(stack.urls["auth"], stack, org)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and "system/Observation.read" in body["scope"]
    fhir = httpx.get(
        f"{stack.ehrs[org].url}/Patient",
        params={"_count": "1"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert fhir.status_code == 200
    assert _token(stack.urls["auth"], stack, org).json()["access_token"] == body["access_token"]  # shared cache


def test_features_get_their_own_scopes_and_tokens(stack: Stack) -> None:
    news2 = _token(stack.urls["auth"], stack, "org1").json()
    subscriptions = _token(stack.urls["auth"], stack, "org1", "subscriptions", service="ingest").json()
    assert news2["access_token"] != subscriptions["access_token"]
    assert "system/Subscription.write" in subscriptions["scope"] and "Subscription" not in news2["scope"]


def test_one_organizations_token_is_refused_by_the_other(stack: Stack) -> None:
    token = _token(stack.urls["auth"], stack, "org1").json()["access_token"]
    response = httpx.get(f"{stack.ehrs['org2'].url}/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("service", "credential", "feature", "status"),
    [
        ("inference", "wrong", "news2", 401),
        ("nobody", "x", "news2", 401),
        ("writeback", None, "news2", 200),
        ("ingest", None, "news2", 403),  # not in ingest's grant
        ("inference", None, "bulk-export", 403),  # not enabled for the organization
    ],
)
def test_internal_api_enforces_the_policy(
    stack: Stack, service: str, credential: str | None, feature: str, status: int
) -> None:
    assert _token(stack.urls["auth"], stack, "org1", feature, service, credential).status_code == status


def test_unknown_organization(stack: Stack) -> None:
    assert _token(stack.urls["auth"], stack, "org9").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "invalid request"),
        (b'{"organization": "org1"}', 400, "feature"),
        (b'{"organization": "org1", "feature": "news2", "min_ttl": 7200}', 400, "min_ttl"),
        (b'{"organization": "org1", "feature": "news2", "pad": "' + b"x" * 20_000 + b'"}', 413, "bytes"),
    ],
)
def test_bad_token_requests_get_a_precise_error_and_no_token(stack: Stack, body: bytes, status: int, says: str) -> None:
    assert stack.config
    response = httpx.post(
        f"{stack.urls['auth']}/internal/v1/tokens",
        content=body,
        headers={
            "Authorization": f"Bearer {stack.config.service_credential('inference')}",
            "X-Ehrflow-Service": "inference",
        },
    )
    assert response.status_code == status and says in response.json()["error"]
    assert "access_token" not in response.text and response.headers["content-type"] == "application/json"


def test_the_token_api_takes_post_only(stack: Stack) -> None:
    assert httpx.get(f"{stack.urls['auth']}/internal/v1/tokens").status_code == 405


@pytest.fixture()
def org1_only_auth(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A second auth replica whose policy lets inference have organization 1's tokens only."""
    assert stack.config
    policy = tmp_path / "policy.yaml"
    credential = stack.config.credentials_dir / "inference"
    policy.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "inference": {"credential_file": str(credential), "organizations": ["org1"], "features": ["news2"]}
                }
            }
        )
    )
    proc, url = stack.start_service("auth", tmp_path / "auth.log", EHRFLOW_SERVICE_POLICY_FILE=str(policy))
    try:
        yield url
    finally:
        proc.stop()


def test_a_service_allowed_one_organization_cannot_get_the_others_token(stack: Stack, org1_only_auth: str) -> None:
    assert _token(org1_only_auth, stack, "org1").status_code == 200
    refused = _token(org1_only_auth, stack, "org2")
    assert refused.status_code == 403 and "access_token" not in refused.text


def test_issues_and_refusals_are_audited_on_the_audit_topic(stack: Stack) -> None:
    assert stack.broker
    assert _token(stack.urls["auth"], stack, "org2", "news2", service="ingest").status_code == 403
    assert _token(stack.urls["auth"], stack, "org2").status_code == 200
    records = read_topic(stack.broker.url, topics.AUDIT)
    refused = [r for r in records if r["action"] == "token.refused" and r["actor"] == "ingest"]
    assert any(r["organization_id"] == "org2" and r["details"]["reason"] == "not allowed by policy" for r in refused)
    issued = [r for r in records if r["action"] == "token.issued" and r["organization_id"] == "org2"]
    assert issued and issued[0]["details"]["kid"] == "org2-key-1" and len(issued[0]["details"]["jti"]) >= 22
    summaries = wait_for_records(
        stack.broker.url,
        topics.AUDIT,
        lambda recs: any(r["action"] == "token.served" and r["actor"] == "inference" for r in recs),
        timeout=30,
    )
    served = [r for r in summaries if r["action"] == "token.served" and r["actor"] == "inference"]
    assert all(r["details"]["count"] >= 1 for r in served)


def test_unauthenticated_token_requests_are_audited_as_one_summary_not_a_record_each(stack: Stack) -> None:
    """Every 401 published a confirmed audit record: anyone could make the auth service write to Kafka at
    their request rate. They are counted and audited as one summary per interval (2 s on the stack)."""
    assert stack.broker
    marker = f"forged-{uuid.uuid4().hex[:6]}"
    for i in range(40):
        claimed = "writeback" if i % 2 else f"{marker}-{i}"  # forged names are not kept apart: no unbounded keys
        assert _token(stack.urls["auth"], stack, "org1", service=claimed, credential="wrong").status_code == 401

    def summarised(records: list[dict[str, Any]]) -> bool:
        return sum(_unauthenticated(records)) >= 40

    def _unauthenticated(records: list[dict[str, Any]]) -> list[int]:
        return [
            int(r["details"]["count"])
            for r in records
            if r["action"] == "token.refused" and r["details"].get("reason") == "unauthenticated"
        ]

    records = wait_for_records(stack.broker.url, topics.AUDIT, summarised, timeout=30)
    assert not any(marker in str(r["actor"]) for r in records)
    assert len(_unauthenticated(records)) < 40, "summaries, not a record per refusal"
    assert {"writeback", "unknown"} <= {r["actor"] for r in records if r["details"].get("reason") == "unauthenticated"}
