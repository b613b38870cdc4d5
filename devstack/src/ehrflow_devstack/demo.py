"""The reference scenario, end to end, on the local stack: what ``make demo`` runs and the e2e test checks.

Two organizations, three workflows. In each organization a nurse charts vital signs for three patients
(NEWS2), a patient is discharged after an inpatient stay (readmission risk, a model behind MLServer), and a
patient is put forward for a tumor board (a summary from an OpenAI-compatible model behind llama.cpp's
server). The EHR notifies ehrflow; inference drafts RiskAssessments and a DocumentReference (or records
insufficient data); a clinician approves every draft; writeback writes each with its Provenance to its own
organization's EHR.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ehrflow_contracts import topics
from ehrflow_contracts.fhir import SYSTEM_DRAFT, SYSTEM_TAG, TAG_GENERATED
from ehrflow_devstack.config import ORGS, WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.scenario import WORKFLOW_TOPICS, Ehr, PatientCase, cases
from ehrflow_devstack.stack import Stack

CONTENT = {"org1": "full-resource", "org2": "id-only"}
OUTPUT_TYPES = ("RiskAssessment", "DocumentReference")
"""Organization 1's EHR includes the resource in notifications; organization 2's sends ids only."""


@dataclass
class OrgResult:
    org: str
    cases: list[PatientCase] = field(default_factory=list)
    events: int = 0
    drafts: list[dict[str, Any]] = field(default_factory=list)
    approved: int = 0
    written: list[dict[str, Any]] = field(default_factory=list)
    read_back: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    insufficient: list[dict[str, Any]] = field(default_factory=list)
    foreign: int = 0
    """This organization's drafts found in the other organization's EHR (must be 0)."""


@dataclass
class ScenarioResult:
    orgs: dict[str, OrgResult]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _wait(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


class ReviewClient:
    """What a clinician's review screen does, through the writeback review API."""

    def __init__(self, base: str, org: str, key: str) -> None:
        self.org = org
        self.http = httpx.Client(
            base_url=f"{base}/v1/orgs/{org}", timeout=15.0, headers={"Authorization": f"Bearer {key}"}
        )

    def drafts(self, status: str = "pending") -> list[dict[str, Any]]:
        response = self.http.get("/drafts", params={"status": status})
        response.raise_for_status()
        return response.json()["drafts"]  # type: ignore[no-any-return]

    def has_at_least(self, status: str, count: int) -> Callable[[], bool]:
        return lambda: len(self.drafts(status)) >= count

    def approve(self, draft_id: str, reviewer: str) -> httpx.Response:
        return self.http.post(f"/drafts/{draft_id}/approve", json={"reviewer": reviewer})

    def close(self) -> None:
        self.http.close()


def run_scenario(stack: Stack, say: Callable[[str], None] = print) -> ScenarioResult:
    assert stack.config and stack.broker
    config, bootstrap = stack.config, stack.broker.url
    ehrs = {o.id: Ehr(stack.ehrs[o.id].url, config.admin_token) for o in ORGS}
    reviews = {o.id: ReviewClient(stack.urls["writeback"], o.id, config.review_key(o.id)) for o in ORGS}
    results = {o.id: OrgResult(o.id) for o in ORGS}
    problems: list[str] = []
    try:
        for org, ehr in ehrs.items():
            endpoint, secret = f"{stack.urls['ingest']}/v1/notify/{org}", config.webhook_secret(org)
            subs = [ehr.subscribe(endpoint, WEBHOOK_HEADER, secret, CONTENT[org], workflow=w) for w in WORKFLOW_TOPICS]
            say(f"{org}: {len(subs)} subscriptions active ({CONTENT[org]} notifications to ingest)")
        for org, ehr in ehrs.items():
            for case in cases(org):
                results[org].cases.append(ehr.record_patient(case))
            charted = sum(c.workflow == "news2" for c in results[org].cases)
            say(f"{org}: charted vital signs for {charted} patients, discharged one, asked a tumor board for one")

        expected_drafts = {org: sum(c.expect != "insufficient" for c in r.cases) for org, r in results.items()}
        for org, review in reviews.items():
            _wait(f"{org} drafts", review.has_at_least("pending", expected_drafts[org]))
            results[org].drafts = review.drafts()
            say(f"{org}: {len(results[org].drafts)} drafts waiting for review")

        panels = {c.ids["patient"]: org for org, r in results.items() for c in r.cases if c.expect == "insufficient"}
        outcomes = wait_for_records(
            bootstrap,
            topics.INFERENCE_OUTCOME,
            lambda recs: (
                {(r["organization_id"], r.get("patient")) for r in recs} >= {(o, p) for p, o in panels.items()}
            ),
        )
        for record in outcomes:
            if record.get("outcome") == "insufficient-data" and record["organization_id"] in results:
                results[record["organization_id"]].insufficient.append(record)
        say("insufficient-data outcomes recorded for the incomplete charts")

        for org, review in reviews.items():
            for draft in results[org].drafts:
                response = review.approve(draft["draft_id"], reviewer=f"Practitioner/{org}-ward-sister")
                if response.status_code == 202:
                    results[org].approved += 1
                else:
                    problems.append(f"{org}: approving {draft['draft_id']} answered {response.status_code}")
            say(f"{org}: clinician approved {results[org].approved} drafts")
        for org, review in reviews.items():
            _wait(f"{org} writes", review.has_at_least("written", results[org].approved))
            results[org].written = review.drafts("written")
            say(f"{org}: {len(results[org].written)} drafts written")

        events = read_topic(bootstrap, topics.NOTIFICATION_RECEIVED)
        for org, result in results.items():
            patients = {c.ids["patient"] for c in result.cases}
            result.events = sum(1 for e in events if e["organization_id"] == org and e.get("patient") in patients)
            ehr = ehrs[org]
            generated = f"{SYSTEM_TAG}|{TAG_GENERATED}"
            result.read_back = [r for t in OUTPUT_TYPES for r in ehr.search(t, _tag=generated)]
            result.provenance = ehr.search("Provenance", _tag=generated)
            other = ehrs["org2" if org == "org1" else "org1"]
            result.foreign = sum(
                len(other.search(t, _tag=f"{SYSTEM_DRAFT}|{d['draft_id']}"))
                for d in result.written
                for t in OUTPUT_TYPES
            )
        problems += check(results)
    finally:
        for ehr in ehrs.values():
            ehr.close()
        for review in reviews.values():
            review.close()
    return ScenarioResult(results, problems)


def check(results: dict[str, OrgResult]) -> list[str]:
    """Compare what happened with what the scenario says must happen."""
    problems = []
    for org, r in results.items():
        by_patient = {d["patient"]: d for d in r.written}
        if len(by_patient) != len(r.written):
            problems.append(f"{org}: a patient has more than one written draft")
        for case in r.cases:
            draft = by_patient.get(case.ids["patient"])
            if draft and draft["workflow"] != case.workflow:
                problems.append(f"{org}/{case.key}: drafted by {draft['workflow']}, expected {case.workflow}")
                continue
            if case.workflow != "news2":
                problems += _check_model_draft(org, case, draft)
                continue
            if case.expect == "insufficient":
                if draft:
                    problems.append(f"{org}/{case.key}: drafted despite a missing parameter")
                if not any(o.get("patient") == case.ids["patient"] for o in r.insufficient):
                    problems.append(f"{org}/{case.key}: no insufficient-data outcome")
                continue
            if not draft:
                problems.append(f"{org}/{case.key}: no written draft")
                continue
            summary = draft["summary"]
            if summary["band"] != case.expect or summary["score"] != case.expect_score:
                problems.append(
                    f"{org}/{case.key}: NEWS2 {summary['score']} {summary['band']}, "
                    f"expected {case.expect_score} {case.expect}"
                )
            if case.scale2 and summary.get("spo2_scale") != 2:
                problems.append(f"{org}/{case.key}: SpO2 scale 2 not applied")
        written_refs = {d["resource_ref"] for d in r.written if d.get("resource_ref")}
        read_refs = {f"{x['resourceType']}/{x['id']}" for x in r.read_back}
        if written_refs != read_refs:
            problems.append(f"{org}: EHR holds {sorted(read_refs)}, writeback wrote {sorted(written_refs)}")
        targets = {t["reference"] for p in r.provenance for t in p.get("target", [])}
        if not read_refs <= targets:
            problems.append(f"{org}: written drafts without Provenance: {sorted(read_refs - targets)}")
        if r.foreign:
            problems.append(f"{org}: {r.foreign} of its drafts found in the other organization's EHR")
        if r.events != len(r.cases):
            problems.append(f"{org}: {r.events} notification events on Kafka, expected {len(r.cases)}")
    return problems


def _check_model_draft(org: str, case: PatientCase, draft: dict[str, Any] | None) -> list[str]:
    """The readmission and tumor-board patients: one written draft each, with its model's figures."""
    if draft is None:
        return [f"{org}/{case.key}: no written {case.workflow} draft"]
    summary = draft["summary"]
    if case.workflow == "readmission" and not 0 < summary.get("probability", -1) < 1:
        return [f"{org}/{case.key}: readmission probability {summary.get('probability')} is not a probability"]
    if case.workflow == "tumor-board" and not summary.get("statements", 0) >= 1:
        return [f"{org}/{case.key}: the tumor-board summary has no statement"]
    return []


def _outcome(draft: dict[str, Any]) -> str:
    s, ref = draft["summary"], draft.get("resource_ref")
    if draft["workflow"] == "readmission":
        return f"readmission risk {s['probability']:.0%} ({s['band']}) → {ref}"
    if draft["workflow"] == "tumor-board":
        return f"tumor-board summary, {s['statements']} statement(s) citing {s['cited']} resource(s) → {ref}"
    return f"NEWS2 {s['score']} ({s['band']}, SpO2 scale {s['spo2_scale']}) → {ref}"


def report(result: ScenarioResult) -> str:
    lines = ["", "ehrflow reference scenario — report", "=" * 38]
    for org, r in result.orgs.items():
        lines.append(
            f"{org}: {r.events} events received · {len(r.drafts)} drafts · {r.approved} approved · "
            f"{len(r.read_back)} resources + {len(r.provenance)} Provenance read back from its EHR · "
            f"{len(r.insufficient)} insufficient-data · {r.foreign} in the other EHR"
        )
        written = {d["patient"]: d for d in r.written}
        for case in r.cases:
            d = written.get(case.ids.get("patient", ""))
            if d:
                outcome = _outcome(d)
            else:
                missing = next(
                    (o.get("missing") for o in r.insufficient if o.get("patient") == case.ids.get("patient")), None
                )
                outcome = f"insufficient data (missing: {', '.join(missing or [])})" if missing else "no outcome"
            lines.append(f"   {case.ids.get('patient', '?'):<46} {case.key:<14} {outcome}")
    lines.append("")
    lines.append("RESULT: " + ("matches the scenario" if result.ok else "DOES NOT match the scenario"))
    lines += [f"  - {p}" for p in result.problems]
    return "\n".join(lines)


def run_demo(state: Path) -> int:
    print(
        "ehrflow demo: starting the local stack (broker, Redis, two sandbox EHRs, two model servers, four services) …",
        flush=True,
    )
    started = time.monotonic()
    try:
        with Stack(state) as stack:
            print("Running the reference scenario …", flush=True)
            result = run_scenario(stack, say=lambda m: print(f"  · {m}", flush=True))
            print(report(result))
            print(f"(logs of every process: {stack.logs}/; {time.monotonic() - started:.0f}s in all)")
            return 0 if result.ok else 1
    except Exception as exc:  # a demo reports, it does not dump a traceback on a newcomer
        print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"Logs of every process: {state / 'logs'}/", file=sys.stderr)
        return 1
