"""The review screen's refusals, each one tried: forms without their token, a rejection without a reason, an
edit of a score, an expired draft, another patient's draft, a cookie carried to another organization, a
patient's session, and framing by an unknown organization's page. (Writeback's screen and handlers on
FastStream's in-memory broker, the review queue on the stack's real Redis, auth's session introspection at
a transport mock.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import TestKafkaBroker
from pydantic import SecretStr
from redis.asyncio import Redis
from starlette.applications import Starlette

from ehrflow_contracts import DraftProposed, topics
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.sealing import Sealer
from ehrflow_runtime.sessions import SessionClient, session_cookie_name
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings
from ehrflow_writeback.app import ReviewAccess, ReviewContext
from ehrflow_writeback.handlers import Deps, declare
from ehrflow_writeback.queue import ReviewQueue
from ehrflow_writeback.screen import screen_routes
from ehrflow_writeback.screen.security import COOKIE, ScreenCookie, csrf_token

pytestmark = pytest.mark.integration

SESSIONS = {  # session id → what auth's introspection answers
    "s-clinician": {"organization": "org1", "patient": "Patient/p1", "user": "Practitioner/dr-1", "roles": ["nurse"]},
    "s-oncologist": {
        "organization": "org1",
        "patient": "Patient/p1",
        "user": "Practitioner/dr-2",
        "roles": ["oncologist"],
    },
    "s-patient": {"organization": "org1", "patient": "Patient/p1", "user": "Patient/p1"},
}
BINDING = "binding-secret"


def _introspection(request: httpx.Request) -> httpx.Response:
    import json

    body = json.loads(request.content)
    found = SESSIONS.get(body["session"]) if body["binding"] == BINDING else None
    return httpx.Response(200, json={"active": True, **found} if found else {"active": False})


@dataclass
class Screen:
    queue: ReviewQueue
    broker: Any
    client: httpx.AsyncClient
    cookie: ScreenCookie
    decided: list[dict[str, Any]]
    audited: list[dict[str, Any]]

    def enter(self, session: str = "s-clinician", org: str = "org1") -> None:
        self.client.cookies.set(COOKIE, self.cookie.seal(org, session, BINDING), path=f"/review/{org}/")

    async def post(self, draft_id: str, org: str = "org1", **form: str) -> httpx.Response:
        return await self.client.post(f"/review/{org}/drafts/{draft_id}", data=form)

    @staticmethod
    def csrf(session: str = "s-clinician", org: str = "org1") -> str:
        return csrf_token(org, session, BINDING)


@pytest.fixture()
async def screen(stack: Stack, tmp_path: Path) -> AsyncIterator[Screen]:
    assert stack.redis
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    registry = load_registry(config.organizations_file)
    org1 = registry.get("org1")
    assert org1 is not None
    fhir = MockFhir().client(org1, service="writeback")
    redis = Redis.from_url(stack.redis.url)
    queue = ReviewQueue(redis, Sealer(os.urandom(32)), prefix=f"test:{uuid.uuid4().hex}")
    broker = make_broker(KafkaSettings(), client_id="writeback", consumer=ConsumerPolicy(backoff_s=0, retry_delay_s=0))
    publishers = declare(broker, lambda: Deps(queue=queue, fhir_for=lambda _org, _feature, _type: fhir))
    decided: list[dict[str, Any]] = []
    audited: list[dict[str, Any]] = []

    @broker.subscriber(topics.REVIEW_DECIDED, group_id="test-observer")
    async def observe(body: dict[str, Any]) -> None:
        decided.append(body)

    @broker.subscriber(topics.AUDIT, group_id="test-audit")
    async def observe_audit(body: dict[str, Any]) -> None:
        audited.append(body)

    auth = httpx.AsyncClient(transport=httpx.MockTransport(_introspection))
    sessions = SessionClient(auth, base_url="http://auth", service_name="writeback", credential=SecretStr("x"))
    context = ReviewContext(registry=registry, queue=queue, publishers=publishers, publish_timeout_s=1)
    access = ReviewAccess(registry, sessions)
    cookie = ScreenCookie(Sealer(os.urandom(32)))
    app = Starlette(routes=screen_routes(lambda: context, lambda: access, cookie))
    async with (
        TestKafkaBroker(broker) as test_broker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://writeback") as client,
    ):
        yield Screen(queue, test_broker, client, cookie, decided, audited)
    await auth.aclose()
    await redis.aclose()


async def _queued(screen: Screen, *, patient: str = "Patient/p1", **fields: Any) -> DraftProposed:
    draft = news2_draft(patient=patient, **fields)
    await screen.queue.add(draft)
    return draft


async def test_the_page_lists_only_the_sessions_patient_with_its_security_headers(screen: Screen) -> None:
    mine, other = await _queued(screen), await _queued(screen, patient="Patient/p2")
    screen.enter()
    page = await screen.client.get("/review/org1/drafts")
    assert page.status_code == 200
    assert f"draft-{mine.draft_id}" in page.text and other.draft_id not in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    assert screen.csrf() in page.text


async def test_a_form_without_its_token_changes_nothing(screen: Screen) -> None:
    draft = await _queued(screen)
    screen.enter()
    for token in ("", "0" * 64, Screen.csrf(session="s-patient")):
        answer = await screen.post(draft.draft_id, csrf=token, action="approve")
        assert answer.status_code == 403
    assert screen.decided == []


async def test_a_rejection_needs_a_reason_and_a_score_cannot_be_edited(screen: Screen) -> None:
    draft = await _queued(screen)
    screen.enter()
    answer = await screen.post(draft.draft_id, csrf=screen.csrf(), action="reject", reason_code="")
    assert answer.status_code == 400 and "reason" in answer.text
    answer = await screen.post(draft.draft_id, csrf=screen.csrf(), action="edit", text="a new number")
    assert answer.status_code == 400 and "no text to edit" in answer.text
    assert screen.decided == []
    answer = await screen.post(
        draft.draft_id, csrf=screen.csrf(), action="reject", reason_code="already-addressed", comment="seen"
    )
    assert answer.status_code == 303
    assert [(d["decision"], d["reason_code"], d["reason"]) for d in screen.decided] == [
        ("rejected", "already-addressed", "seen")
    ]


async def test_an_expired_draft_cannot_be_approved(screen: Screen) -> None:
    draft = await _queued(screen, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    screen.enter()
    answer = await screen.post(draft.draft_id, csrf=screen.csrf(), action="approve")
    assert answer.status_code == 409 and "expired" in answer.text
    assert screen.decided == []


async def test_another_patients_draft_is_not_found(screen: Screen) -> None:
    other = await _queued(screen, patient="Patient/p2")
    screen.enter()
    answer = await screen.post(other.draft_id, csrf=screen.csrf(), action="approve")
    assert answer.status_code == 404 and screen.decided == []


async def test_a_cookie_does_not_open_another_organizations_screen(screen: Screen) -> None:
    screen.client.cookies.set(COOKIE, screen.cookie.seal("org1", "s-clinician", BINDING), path="/review/org2/")
    page = await screen.client.get("/review/org2/drafts")
    assert page.status_code == 401 and "Launch from your EHR" in page.text


async def test_a_patients_session_is_refused_the_screen(screen: Screen) -> None:
    screen.client.cookies.set(session_cookie_name("s-patient"), BINDING)
    answer = await screen.client.post("/review/org1/session", json={"session": "s-patient"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers
    screen.enter(session="s-patient")
    assert (await screen.client.get("/review/org1/drafts")).status_code == 403


async def test_a_clinicians_session_becomes_a_partitioned_cookie_for_its_organization(screen: Screen) -> None:
    screen.client.cookies.set(session_cookie_name("s-clinician"), BINDING)
    answer = await screen.client.post("/review/org1/session", json={"session": "s-clinician"})
    assert answer.status_code == 204
    header = answer.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=none", "Partitioned", "Path=/review/org1/"):
        assert flag in header
    screen.client.cookies.set(session_cookie_name("s-clinician"), "not-the-binding")
    wrong = await screen.client.post("/review/org1/session", json={"session": "s-clinician"})
    assert wrong.status_code == 401


async def test_an_unknown_organizations_page_may_be_framed_by_nobody(screen: Screen) -> None:
    page = await screen.client.get("/review/nowhere/")
    assert page.status_code == 404 and "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_a_clinician_without_the_contracts_role_cannot_decide_and_is_audited(screen: Screen) -> None:
    draft = await _queued(screen, approver_role="oncologist")
    screen.enter()  # a nurse
    page = await screen.client.get("/review/org1/drafts")
    assert "needs the role “oncologist”" in page.text and 'value="approve"' not in page.text
    answer = await screen.post(draft.draft_id, csrf=screen.csrf(), action="approve")
    assert answer.status_code == 403 and "needs the role &#39;oncologist&#39;" in answer.text
    assert screen.decided == []
    audited = [(a["action"], a["outcome"], a["actor"], a["drafts"]) for a in screen.audited]
    assert ("review.viewed", "success", "Practitioner/dr-1", [draft.draft_id]) in audited  # the pages shown
    refused = [a for a in screen.audited if a["action"] != "review.viewed"]
    assert [(a["action"], a["outcome"], a["actor"], a["drafts"]) for a in refused] == [
        ("review.refused", "failure", "Practitioner/dr-1", [draft.draft_id])
    ]
    assert refused[0]["details"]["role"] == "oncologist"
    screen.enter(session="s-oncologist")
    answer = await screen.post(draft.draft_id, csrf=screen.csrf(session="s-oncologist"), action="approve")
    assert answer.status_code == 303 and [d["reviewer"] for d in screen.decided] == ["Practitioner/dr-2"]
