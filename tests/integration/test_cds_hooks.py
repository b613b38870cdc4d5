"""CDS Hooks 2.0: discovery, ``patient-view`` cards and feedback, with the specification's own example requests,
and every check on the EHR's CDS client JWT tried once with a token that fails it. (Writeback's CDS routes and
handlers on FastStream's in-memory broker, the review queue and the jti record on the stack's real Redis, the
CDS client's JWK Set at a transport mock.)
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from faststream.kafka import TestKafkaBroker
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from redis.asyncio import Redis
from starlette.applications import Starlette

from ehrflow_contracts import DraftProposed, Evidence
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.sealing import Sealer
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings
from ehrflow_writeback.app import ReviewContext
from ehrflow_writeback.cds import cds_routes
from ehrflow_writeback.cds.cards import card_uuid
from ehrflow_writeback.cds.trust import CdsTrust
from ehrflow_writeback.handlers import Deps, declare
from ehrflow_writeback.queue import ReviewQueue

pytestmark = pytest.mark.integration

PUBLIC = "https://ehrflow.example.org"
ISSUER = "https://fhir-ehr.example.com/"
JWKS_URL = "https://fhir-ehr.example.com/jwk_uri"
SERVICE = f"{PUBLIC}/cds/org1/cds-services/ehrflow-drafts"

# The specification's examples ("Calling a CDS Service", "Feedback", "Trusting CDS Clients"), verbatim.
SPEC_REQUEST: dict[str, Any] = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": "some-opaque-fhir-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/Patient.read patient/Observation.read",
        "subject": "cds-service4",
    },
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {
        "patientToGreet": {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1925-12-23",
            "id": "1288992",
            "active": True,
        }
    },
}
SPEC_FEEDBACK_OVERRIDDEN: dict[str, Any] = {
    "feedback": [
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "overrideReason": {
                "reason": {"code": "d7ecf885", "system": "https://example.com/cds-hooks/override-reason-system"},
                "userComment": "A comment entered by the clinician.",
            },
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        }
    ]
}
SPEC_FEEDBACK_ACCEPTED: dict[str, Any] = {
    "feedback": [
        {
            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        }
    ]
}
SPEC_JWKS = {
    "keys": [
        {
            "kty": "EC",
            "use": "sig",
            "crv": "P-384",
            "kid": "example-kid",
            "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
            "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
            "alg": "ES384",
        }
    ]
}
SPEC_PRIVATE = {
    **SPEC_JWKS["keys"][0],
    "d": "SeFXUXda8UomZ8GFUl7HH_Oi15rIbfMcsWj9ecIsDR8kLbqsEz2CGNgwy_IcILxy",
}
SPEC_JWT = (  # signed by the example key; expired in 2015
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLWVoci5leGFtcGxlLmNvbS9q"
    "d2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsInN1YiI6ImNsaWVudF9pZCIsImF1ZCI6Imh0dHBzOi8vY2Rz"
    "LmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Njg4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUy"
    "MmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNhYzFlIiwidGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0."
    "CUFPkplnWd6YGIvzoHolWCQBDsCL8QtTWKGg_QFpS169WrqDGzktRi-_we6-6rVzbjerU27ZKww_SW0-b9RTz-dPJNcqsueMio8r6EqXUXhbLm_ch"
    "3XFSbDlGHDl_tqo"
)
KEY = ECKey.import_key(SPEC_PRIVATE)


def token(audience: str = SERVICE, *, key: Any = KEY, alg: str = "ES384", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": audience, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": alg, "typ": "JWT", "kid": "example-kid"}, body, key, algorithms=[alg])


@dataclass
class Cds:
    client: httpx.AsyncClient
    queue: ReviewQueue
    jwks_reads: list[str]

    async def call(
        self, path: str, body: Any = None, *, jwt_: str | None = None, aud: str | None = None
    ) -> httpx.Response:
        url = f"{PUBLIC}/cds/org1/cds-services{path}"
        bearer = jwt_ if jwt_ is not None else token(aud or url)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if body is None:
            return await self.client.get(url, headers=headers)
        return await self.client.post(url, json=body, headers=headers)


@pytest.fixture()
async def cds(stack: Stack, tmp_path: Path) -> AsyncIterator[Cds]:
    assert stack.redis
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    raw = copy.deepcopy(yaml.safe_load(config.organizations_file.read_text()))
    raw["organizations"]["org1"]["cds_hooks"] = {"clients": [{"issuer": ISSUER, "jwks_url": JWKS_URL}]}
    raw["organizations"]["org1"]["launch"] = {
        "client_id": "ehrflow-review",
        "redirect_uri": f"{PUBLIC}/launch/org1/callback",
        "issuers": ["https://ehr.example.org/fhir"],
        "return_url": f"{PUBLIC}/review/org1/",
    }
    config.organizations_file.write_text(yaml.safe_dump(raw))
    registry = load_registry(config.organizations_file)
    org1 = registry.get("org1")
    assert org1 is not None
    reads: list[str] = []

    def jwks(request: httpx.Request) -> httpx.Response:
        reads.append(str(request.url))
        return httpx.Response(200, json=SPEC_JWKS)

    keys_http = httpx.AsyncClient(transport=httpx.MockTransport(jwks))
    redis = Redis.from_url(stack.redis.url)
    queue = ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}")
    fhir = MockFhir().client(org1, service="writeback")
    broker = make_broker(KafkaSettings(), client_id="writeback", consumer=ConsumerPolicy(backoff_s=0, retry_delay_s=0))
    publishers = declare(broker, lambda: Deps(queue=queue, fhir_for=lambda _org, _feature, _type: fhir))
    context = ReviewContext(registry=registry, queue=queue, publishers=publishers, publish_timeout_s=1)
    trust = CdsTrust(redis, lambda _org: keys_http)
    app = Starlette(routes=cds_routes(lambda: context, lambda: trust, PUBLIC))
    async with (
        TestKafkaBroker(broker),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal") as client,
    ):
        yield Cds(client, queue, reads)
    await keys_http.aclose()
    await redis.aclose()


async def _pending(cds: Cds, patient: str = "Patient/1288992", band: str = "high") -> DraftProposed:
    draft = news2_draft(
        patient=patient,
        summary={"score": 9, "band": band, "scores": {"respiration_rate": 3}},
        evidence=(Evidence(reference="Observation/o1/_history/1", label="Respiratory rate", value="26", unit="/min"),),
    )
    await cds.queue.add(draft)
    return draft


async def test_discovery_names_the_patient_view_service_and_its_prefetch(cds: Cds) -> None:
    answer = await cds.call("")
    assert answer.status_code == 200
    (service,) = answer.json()["services"]
    assert (service["hook"], service["id"]) == ("patient-view", "ehrflow-drafts")
    assert service["prefetch"] == {"patient": "Patient/{{context.patientId}}"} and service["description"]


async def test_the_specifications_patient_view_request_gets_a_card_per_pending_draft(cds: Cds) -> None:
    high, low = await _pending(cds), await _pending(cds, band="low")
    await _pending(cds, patient="Patient/someone-else")
    answer = await cds.call("/ehrflow-drafts", SPEC_REQUEST)
    assert answer.status_code == 200
    cards = {c["uuid"]: c for c in answer.json()["cards"]}
    assert set(cards) == {card_uuid(high.draft_id), card_uuid(low.draft_id)}, "this patient's drafts only"
    card = cards[str(card_uuid(high.draft_id))]
    assert card["indicator"] == "critical" and cards[str(card_uuid(low.draft_id))]["indicator"] == "info"
    assert len(card["summary"]) < 140 and "Score 9" in card["summary"]
    assert card["source"]["label"] == "ehrflow · ehrflow-news2 1.0.0"
    assert card["links"] == [
        {"label": "Review the AI draft", "url": f"{PUBLIC}/launch/org1", "type": "smart", "appContext": high.draft_id}
    ]
    assert {r["code"] for r in card["overrideReasons"]} >= {"data-incorrect", "other"}
    assert all(r["display"] for r in card["overrideReasons"])


async def test_a_request_that_is_not_patient_view_or_names_another_patient_in_prefetch_is_refused(cds: Cds) -> None:
    wrong_hook = {**SPEC_REQUEST, "hook": "order-select"}
    assert (await cds.call("/ehrflow-drafts", wrong_hook)).status_code == 400
    mismatch = copy.deepcopy(SPEC_REQUEST)
    mismatch["prefetch"] = {"patient": {"resourceType": "Patient", "id": "someone-else"}}
    answer = await cds.call("/ehrflow-drafts", mismatch)
    assert answer.status_code == 400 and "prefetch.patient" in answer.text


async def test_feedback_from_the_specifications_examples_is_recorded_on_the_draft(cds: Cds) -> None:
    draft = await _pending(cds)
    ours = str(card_uuid(draft.draft_id))
    overridden = copy.deepcopy(SPEC_FEEDBACK_OVERRIDDEN)
    overridden["feedback"][0]["card"] = ours
    answer = await cds.call("/ehrflow-drafts/feedback", overridden, aud=SERVICE)
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}
    queued = await cds.queue.get("org1", draft.draft_id)
    assert queued is not None and queued.status == "pending", "an overridden card does not decide the draft"
    view = queued.view()
    assert view["card_feedback"] == "overridden" and view["card_feedback_reason"] == "d7ecf885"
    assert view["card_feedback_comment"] == "A comment entered by the clinician."
    accepted = copy.deepcopy(SPEC_FEEDBACK_ACCEPTED)
    accepted["feedback"][0]["card"] = ours
    assert (await cds.call("/ehrflow-drafts/feedback", accepted)).json() == {"recorded": 1}
    queued = await cds.queue.get("org1", draft.draft_id)
    assert queued is not None and queued.view()["card_feedback"] == "accepted"
    unknown = await cds.call("/ehrflow-drafts/feedback", SPEC_FEEDBACK_ACCEPTED)  # a card that is not ours
    assert unknown.status_code == 200 and unknown.json() == {"recorded": 0}


async def test_the_specifications_own_jwt_is_refused_because_it_expired_in_2015(cds: Cds) -> None:
    answer = await cds.call("", jwt_=SPEC_JWT)
    assert answer.status_code == 401 and "expired" in answer.text


async def test_a_jwt_from_an_unlisted_issuer_is_refused_before_any_key_is_fetched(cds: Cds) -> None:
    answer = await cds.call("", jwt_=token(f"{PUBLIC}/cds/org1/cds-services", iss="https://attacker.example.net/"))
    assert answer.status_code == 401 and "issuer" in answer.text
    assert cds.jwks_reads == []


async def test_a_jwt_for_another_endpoint_is_refused(cds: Cds) -> None:
    answer = await cds.call("", jwt_=token("https://ehrflow.example.org/cds/org2/cds-services"))
    assert answer.status_code == 401 and "aud" in answer.text


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("none", "a bearer JWT"),
        ("garbage", "does not parse"),
        ("hmac", "algorithm"),
        ("other-key", "signature"),
        ("no-jti", "jti"),
        ("no-iat", "iat"),
        ("expired", "expired"),
    ],
)
async def test_each_other_check_refuses_its_token(cds: Cds, case: str, expected: str) -> None:
    aud = f"{PUBLIC}/cds/org1/cds-services"
    tokens = {
        "none": "",
        "garbage": "not.a.jwt",
        "hmac": token(aud, key=OctKey.generate_key(256), alg="HS256"),
        "other-key": token(aud, key=RSAKey.generate_key(2048), alg="RS384"),
        "no-jti": token(aud, jti=None),
        "no-iat": token(aud, iat=None),
        "expired": token(aud, exp=int(time.time()) - 120),
    }
    answer = await cds.client.get(
        f"{PUBLIC}/cds/org1/cds-services",
        headers={"Authorization": f"Bearer {tokens[case]}"} if tokens[case] else {},
    )
    assert answer.status_code == 401 and expected in json.loads(answer.text)["issue"][0]["diagnostics"]


async def test_a_replayed_jwt_is_refused(cds: Cds) -> None:
    once = token(f"{PUBLIC}/cds/org1/cds-services")
    assert (await cds.call("", jwt_=once)).status_code == 200
    again = await cds.call("", jwt_=once)
    assert again.status_code == 401 and "replayed" in again.text


async def test_an_organization_without_cds_hooks_has_no_services(cds: Cds) -> None:
    url = f"{PUBLIC}/cds/org2/cds-services"
    answer = await cds.client.get(url, headers={"Authorization": f"Bearer {token(url)}"})
    assert answer.status_code == 404
