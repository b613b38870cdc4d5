"""The review screen in a real browser: Debian's Chromium driven by Playwright, on the local stack.

A clinician launches ehrflow from the EHR (a SMART EHR launch at the test authorization server), sees the
patient's drafts with their evidence, approves one, approves one with edits and rejects one with a reason,
and what reaches the EHR (SEKMET) is read back: once at top level, once inside a frame of an EHR page on
another site with third-party cookies blocked. Two launches for two organizations in two frames stay two
sessions, a page outside the organization's EHR origins cannot frame the screen, and axe-core finds no
serious or critical accessibility violation.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import copy
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Frame, Page, expect, sync_playwright

from ehrflow_contracts import DraftProposed, Evidence, ModelRef, topics
from ehrflow_contracts.fhir import SYSTEM_DRAFT
from ehrflow_devstack.browser import CHROMIUM_FLAGS, axe_path, chromium_path
from ehrflow_devstack.kafka_read import publish_events
from ehrflow_devstack.processes import Process, free_port, http_ok
from ehrflow_devstack.scenario import Ehr
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

SUMMARY = "- Stage II adenocarcinoma of the colon [Condition/c-1]\n- CEA 4.1 ug/L [Observation/o-cea]"
EDITED = "- Stage IIA adenocarcinoma of the sigmoid colon, resected [Condition/c-1]\n- CEA 4.1 ug/L [Observation/o-cea]"
SCREENSHOT = Path(__file__).resolve().parents[2] / ".ehrflow" / "review-screen.png"


class _Pages(BaseHTTPRequestHandler):
    """An EHR's page that shows apps in frames: ``/?src=<url>&src=<url>`` is one iframe per ``src``."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        sources = parse_qs(urlsplit(self.path).query).get("src", [])
        frames = "".join(
            f'<iframe title="app {i}" src="{s}" width="420" height="700"></iframe>' for i, s in enumerate(sources)
        )
        body = f"<!doctype html><html lang=en><title>EHR</title><body><h1>Chart</h1>{frames}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _serve_pages() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_address[1]}"  # "localhost": another site than 127.0.0.1


@dataclass
class Env:
    auth: str
    writeback: str
    authorization: dict[str, str]
    ehr_page: str
    foreign_page: str
    ehrs: dict[str, Ehr]
    broker: str

    def launch_url(self, org: str, patient: str, user: str = "Practitioner/dr-screen") -> str:
        """An EHR launch of ehrflow for ``patient``, as the EHR's launch URL names it."""
        answer = httpx.post(f"{self.authorization[org]}/_test/launch", json={"patient": patient, "user": user})
        launch = answer.json()["launch"]
        return f"{self.auth}/launch/{org}?iss={self.authorization[org]}/fhir&launch={launch}"


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    assert stack.config and stack.broker
    tmp = tmp_path_factory.mktemp("screen")
    auth, writeback = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    pages, ehr_page = _serve_pages()
    foreign, foreign_page = _serve_pages()
    started: list[Process] = []
    authorization: dict[str, str] = {}
    try:
        for org in ("org1", "org2"):
            port = free_port()
            authorization[org] = f"http://127.0.0.1:{port}"
            callbacks = [arg for o in ("org1", "org2") for arg in ("--redirect-uri", f"{auth}/launch/{o}/callback")]
            proc = Process(
                f"as-{org}",
                [sys.executable, "-m", "ehrflow_devstack.smart_as", str(port), *callbacks],
                tmp / f"as-{org}.log",
                ready=lambda base=authorization[org]: http_ok(f"{base}/jwks"),
            )
            proc.start(timeout=60)
            started.append(proc)
        # The stack's organization file (its keys and secrets, relative to its folder) plus clinician launches,
        # which end at this writeback's screen, and the EHR page's origin allowed to frame it.
        registry = copy.deepcopy(yaml.safe_load(stack.config.organizations_file.read_text()))
        for org in ("org1", "org2"):
            entry = registry["organizations"][org]
            entry["launch"] = {
                "client_id": "ehrflow-review",
                "redirect_uri": f"{auth}/launch/{org}/callback",
                "issuers": [f"{authorization[org]}/fhir"],
                "return_url": f"{writeback}/review/{org}/",
            }
            entry["review"] = {**entry["review"], "embed_origins": [ehr_page]}
        organizations = stack.config.organizations_file.with_name("organizations-screen.yaml")
        organizations.write_text(yaml.safe_dump(registry))
        proc, _ = stack.start_service("auth", tmp / "auth.log", url=auth, EHRFLOW_ORGANIZATIONS_FILE=str(organizations))
        started.append(proc)
        proc, _ = stack.start_service(
            "writeback",
            tmp / "writeback.log",
            url=writeback,
            EHRFLOW_ORGANIZATIONS_FILE=str(organizations),
            EHRFLOW_AUTH__URL=auth,
        )
        started.append(proc)
        ehrs = {org: Ehr(stack.ehrs[org].url, stack.config.admin_token) for org in ("org1", "org2")}
        yield Env(auth, writeback, authorization, ehr_page, foreign_page, ehrs, stack.broker.url)
        for ehr in ehrs.values():
            ehr.close()
    finally:
        for p in reversed(started):
            p.stop()
        for server in (pages, foreign):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not chromium_path().exists():
        pytest.fail(f"no Chromium at {chromium_path()}: run `make setup` (python -m ehrflow_devstack.browser)")
    with sync_playwright() as playwright:
        # Third-party cookies blocked, as browsers now do: the screen in a frame must live on partitioned cookies.
        args = [*CHROMIUM_FLAGS, "--test-third-party-cookie-phaseout"]
        launched = playwright.chromium.launch(executable_path=str(chromium_path()), args=args, headless=True)
        yield launched
        launched.close()


def _drafts(org: str, patient: str) -> dict[str, DraftProposed]:
    """What inference proposes for one patient: a NEWS2 score, a readmission risk, a tumor-board summary."""
    now = datetime.now(UTC)
    taken = now - timedelta(hours=2)
    common: dict[str, Any] = {"organization_id": org, "correlation_id": uuid.uuid4().hex, "patient": patient}

    def draft(workflow: str, model: str, resource: dict[str, Any], **fields: Any) -> DraftProposed:
        return DraftProposed(
            **common,
            draft_id=uuid.uuid4().hex,
            workflow=workflow,
            feature=workflow,
            model=ModelRef(name=model, version="1.0.0"),
            resource=resource,
            expires_at=now + timedelta(hours=24),
            **fields,
        )

    def risk(text: str) -> dict[str, Any]:
        return {
            "resourceType": "RiskAssessment",
            "status": "preliminary",
            "subject": {"reference": patient},
            "occurrenceDateTime": taken.isoformat(),
            "prediction": [{"qualitativeRisk": {"text": text}}],
        }

    vitals = [
        Evidence(reference="Observation/rr/_history/1", label="Respiratory rate", value="26", unit="/min", when=taken),
        Evidence(reference="Observation/spo2/_history/1", label="Oxygen saturation", value="90", unit="%", when=taken),
        Evidence(
            reference="Observation/temp/_history/1", label="Body temperature", value="38.6", unit="Cel", when=taken
        ),
    ]
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary",
        "type": {"text": "Tumor board preparation summary"},
        "subject": {"reference": patient},
        "date": now.isoformat(),
        "content": [
            {"attachment": {"contentType": "text/markdown", "data": base64.b64encode(SUMMARY.encode()).decode()}}
        ],
    }
    return {
        "news2": draft(
            "news2",
            "ehrflow-news2",
            risk("high"),
            basis=tuple(e.reference for e in vitals),
            evidence=tuple(vitals),
            summary={"score": 9, "band": "high", "scores": {"respiration_rate": 3, "spo2": 3, "temperature": 1}},
        ),
        "readmission": draft(
            "readmission",
            "readmission-gbt",
            risk("low"),
            basis=("Encounter/e-1/_history/2",),
            evidence=(
                Evidence(reference="Encounter/e-1/_history/2", label="Inpatient stay", value="finished", when=taken),
            ),
            summary={"probability": 0.23, "band": "low", "length_of_stay_days": 4.0},
        ),
        "tumor-board": draft(
            "tumor-board",
            "tumor-board-llm",
            document,
            basis=("Condition/c-1/_history/1", "Observation/o-cea/_history/1"),
            evidence=(
                Evidence(
                    reference="Condition/c-1/_history/1", label="Adenocarcinoma of colon", value="active", when=taken
                ),
                Evidence(reference="Observation/o-cea/_history/1", label="CEA", value="4.1", unit="ug/L", when=taken),
            ),
            summary={"statements": 2, "cited": 2},
        ),
    }


def _propose(env: Env, drafts: list[DraftProposed]) -> None:
    # Playwright's sync API runs an event loop in this thread: the producer gets a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish_events(env.broker, topics.DRAFT_PROPOSED, drafts)).result()


def _written(env: Env, org: str, resource_type: str, draft: DraftProposed) -> list[dict[str, Any]]:
    return env.ehrs[org].search(resource_type, _tag=f"{SYSTEM_DRAFT}|{draft.draft_id}")


def _review_all_three(view: Page | Frame, drafts: dict[str, DraftProposed]) -> None:
    """Approve the score, approve the summary with edits, reject the readmission risk with a reason."""
    news2, readmission, summary = (f"#draft-{drafts[k].draft_id}" for k in ("news2", "readmission", "tumor-board"))
    expect(view.locator("article.draft")).to_have_count(3, timeout=30_000)
    expect(view.locator(news2)).to_contain_text("Score 9")
    expect(view.locator(news2)).to_contain_text("Respiratory rate")
    expect(view.locator(news2)).to_contain_text("26 /min")
    expect(view.locator(news2)).to_contain_text("ehrflow-news2 1.0.0")
    expect(view.locator(readmission)).to_contain_text("Risk 23%")
    expect(view.locator(summary)).to_contain_text("Stage II adenocarcinoma of the colon")
    view.locator(f"{news2} button[value=approve]").click()
    expect(view.locator(news2)).to_contain_text("written", timeout=30_000)
    view.locator(f"{summary} textarea[name=text]").fill(EDITED)
    view.locator(f"{summary} button[value=edit]").click()
    expect(view.locator(summary)).to_contain_text("the reviewer revised the text", timeout=30_000)
    expect(view.locator(f"{summary} .badge")).to_contain_text("written", timeout=30_000)
    view.locator(f"{readmission} select[name=reason_code]").select_option("data-incorrect")
    view.locator(f"{readmission} textarea[name=comment]").fill("Stay length is wrong")
    view.locator(f"{readmission} button[value=reject]").click()
    expect(view.locator(f"{readmission} .badge")).to_contain_text("rejected", timeout=30_000)
    expect(view.locator(readmission)).to_contain_text("The input data are wrong or incomplete")


def _read_back(env: Env, org: str, drafts: dict[str, DraftProposed], reviewer: str) -> None:
    risk = _written(env, org, "RiskAssessment", drafts["news2"])
    assert len(risk) == 1 and risk[0]["status"] == "final"
    document = _written(env, org, "DocumentReference", drafts["tumor-board"])
    assert len(document) == 1
    text = base64.b64decode(document[0]["content"][0]["attachment"]["data"]).decode()
    assert text == EDITED, "the clinician's edit is what the EHR holds"
    provenance = _written(env, org, "Provenance", drafts["tumor-board"])
    assert len(provenance) == 1
    agents = {(a["type"]["coding"][0]["code"], a["who"].get("reference")) for a in provenance[0]["agent"]}
    assert ("verifier", reviewer) in agents and ("author", reviewer) in agents, "the reviewer revised it"
    assert any(e["role"] == "revision" for e in provenance[0]["entity"])
    assert _written(env, org, "RiskAssessment", drafts["readmission"]) == [], "a rejected draft is never written"


def _axe(page: Page) -> list[dict[str, Any]]:
    page.evaluate(axe_path().read_text())  # through DevTools: the page's own CSP refuses injected scripts
    results: dict[str, Any] = page.evaluate("() => axe.run(document)")
    return [v for v in results["violations"] if v["impact"] in ("serious", "critical")]


def test_a_clinician_reviews_at_top_level_and_the_ehr_holds_the_result(env: Env, browser: Browser) -> None:
    patient = f"Patient/screen-{uuid.uuid4().hex[:8]}"
    drafts = _drafts("org1", patient)
    _propose(env, list(drafts.values()))
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone's width
    page = context.new_page()
    answer = page.goto(env.launch_url("org1", patient))
    assert answer is not None
    expect(page.locator("h1")).to_contain_text(f"AI drafts for {patient}", timeout=30_000)
    assert "session" not in page.url, "the session never stays in the address bar"
    headers = page.request.get(page.url).headers
    assert f"frame-ancestors 'self' {env.authorization['org1']} {env.ehr_page}" in headers["content-security-policy"]
    cookie = next(c for c in context.cookies() if c["name"] == "ehrflow_review")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "None"
    assert cookie["path"] == "/review/org1/"
    expect(page.locator("article.draft")).to_have_count(3, timeout=30_000)
    assert _axe(page) == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))  # what a phone shows first; README's picture is one of these
    page.reload()
    _review_all_three(page, drafts)
    _read_back(env, "org1", drafts, "Practitioner/dr-screen")
    context.close()


def test_a_clinician_reviews_inside_the_ehrs_frame_with_third_party_cookies_blocked(env: Env, browser: Browser) -> None:
    patient = f"Patient/frame-{uuid.uuid4().hex[:8]}"
    drafts = _drafts("org1", patient)
    _propose(env, list(drafts.values()))
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{env.ehr_page}/?src={quote(env.launch_url('org1', patient), safe='')}")
    frame = page.frame_locator("iframe")
    expect(frame.locator("h1")).to_contain_text(f"AI drafts for {patient}", timeout=30_000)
    view = next(f for f in page.frames if f.url.startswith(f"{env.writeback}/review/org1/drafts"))
    _review_all_three(view, drafts)
    _read_back(env, "org1", drafts, "Practitioner/dr-screen")
    cookie = next(c for c in context.cookies() if c["name"] == "ehrflow_review")
    assert cookie.get("partitionKey") == "http://localhost", "kept in the EHR page's partition"
    context.close()


def test_two_organizations_in_two_frames_stay_two_sessions(env: Env, browser: Browser) -> None:
    patients = {org: f"Patient/two-{org}-{uuid.uuid4().hex[:6]}" for org in ("org1", "org2")}
    for org, patient in patients.items():
        _propose(env, [_drafts(org, patient)["news2"]])
    context = browser.new_context()
    page = context.new_page()
    sources = "&".join(f"src={quote(env.launch_url(org, patients[org]), safe='')}" for org in ("org1", "org2"))
    page.goto(f"{env.ehr_page}/?{sources}")
    for i, org in enumerate(("org1", "org2")):
        frame = page.frame_locator(f"iframe[title='app {i}']")
        expect(frame.locator("h1")).to_contain_text(f"AI drafts for {patients[org]}", timeout=30_000)
    for i, org in enumerate(("org1", "org2")):  # each frame, reloaded, is still its own organization's session
        view = next(f for f in page.frames if f.url.startswith(f"{env.writeback}/review/{org}/drafts"))
        view.goto(f"{env.writeback}/review/{org}/drafts")
        expect(page.frame_locator(f"iframe[title='app {i}']").locator("h1")).to_contain_text(patients[org])
    cookies = [c for c in context.cookies() if c["name"] == "ehrflow_review"]
    assert sorted(c["path"] for c in cookies) == ["/review/org1/", "/review/org2/"]
    context.close()


def test_a_page_outside_the_organizations_ehr_origins_cannot_frame_the_screen(env: Env, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    allowed = page.goto(f"{env.ehr_page}/?src={env.writeback}/review/org1/drafts")
    assert allowed is not None
    expect(page.frame_locator("iframe").locator("h1")).to_contain_text("Launch from your EHR", timeout=15_000)
    page.goto(f"{env.foreign_page}/?src={env.writeback}/review/org1/drafts")  # waits for the frame's load too
    framed = [f for f in page.frames if f != page.main_frame]
    assert len(framed) == 1
    assert "Launch from your EHR" not in framed[0].content(), "a blocked frame shows the browser's error page"
    context.close()
