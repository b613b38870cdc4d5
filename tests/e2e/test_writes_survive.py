"""Writes survive the EHR and writeback itself, on real parts: a Kafka-protocol broker of the test's own, the
stack's Redis, a sandbox EHR (SEKMET) of the test's own for organization 1 (stopped and started again) and
the stack's for organization 2, and auth and writeback processes.

- Organization 1's EHR is stopped for two minutes while clinicians approve drafts of both organizations:
  organization 2's drafts are written while organization 1's EHR is still down, and once it is back every
  approved draft of organization 1 is written exactly once (one resource, one Provenance).
- Writeback is killed with SIGKILL between a resource and its Provenance: after a restart each approved
  draft has exactly one of each (the conditional creates find what the first attempt wrote).
"""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from ehrflow_contracts import DraftProposed, topics
from ehrflow_contracts.fhir import SYSTEM_DRAFT
from ehrflow_devstack.config import ORGS, SEKMET_SCOPES
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.kafka_read import publish_events
from ehrflow_devstack.model_gateway import Gateway
from ehrflow_devstack.parts import Part, start_sekmet
from ehrflow_devstack.processes import Process, free_port
from ehrflow_devstack.scenario import Ehr
from ehrflow_devstack.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("waits")]

DOWN_S = 120
DELAYS = "[10, 40, 90]"
"""First try, then 10 s, 40 s and 90 s later: the last try falls after the EHR is back (140 s > 120 s)."""


@dataclass
class Deployment:
    """Auth and writeback on the test's broker, organization 1 at the test's EHR (or a gateway before it)."""

    stack: Stack
    broker: Part
    folder: Path
    org1_ehr: Part
    auth: str = ""
    writeback: str = ""
    processes: dict[str, Process] | None = None

    def start(self, org1_base: str) -> None:
        assert self.stack.config
        registry = copy.deepcopy(yaml.safe_load(self.stack.config.organizations_file.read_text()))
        registry["organizations"]["org1"]["fhir_base_url"] = org1_base
        # Tokens from the EHR's own token endpoint, wherever its FHIR base is reached (through a gateway).
        registry["organizations"]["org1"]["backend_auth"] = {
            **registry["organizations"]["org1"]["backend_auth"],
            "token_endpoint": self.org1_ehr.url.removesuffix("/fhir") + "/auth/token",
        }
        organizations = self.stack.config.organizations_file.with_name(f"organizations-{self.folder.name}.yaml")
        organizations.write_text(yaml.safe_dump(registry))
        common = {
            "EHRFLOW_ORGANIZATIONS_FILE": str(organizations),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": self.broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
        }
        self.processes = {}
        proc, _ = self.stack.start_service("auth", self.folder / "auth.log", url=self.auth, **common)
        self.processes["auth"] = proc
        self.start_writeback(common)

    def start_writeback(self, common: dict[str, str] | None = None) -> None:
        assert self.processes is not None and self.stack.config
        env = common or {
            "EHRFLOW_ORGANIZATIONS_FILE": str(
                self.stack.config.organizations_file.with_name(f"organizations-{self.folder.name}.yaml")
            ),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": self.broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
        }
        proc, _ = self.stack.start_service(
            "writeback",
            self.folder / "writeback.log",
            url=self.writeback,
            EHRFLOW_AUTH__URL=self.auth,
            EHRFLOW_RETRY__DELAYS_S=DELAYS,
            **env,
        )
        self.processes["writeback"] = proc

    def stop(self) -> None:
        for proc in reversed(list((self.processes or {}).values())):
            proc.stop()

    def approve(self, draft: DraftProposed) -> None:
        assert self.stack.config
        answer = httpx.post(
            f"{self.writeback}/v1/orgs/{draft.organization_id}/drafts/{draft.draft_id}/approve",
            json={"reviewer": "Practitioner/dr-1"},
            headers={"Authorization": f"Bearer {self.stack.config.review_key(draft.organization_id)}"},
            timeout=20,
        )
        assert answer.status_code == 202, answer.text

    def status(self, draft: DraftProposed) -> str:
        assert self.stack.config
        answer = httpx.get(
            f"{self.writeback}/v1/orgs/{draft.organization_id}/drafts/{draft.draft_id}",
            headers={"Authorization": f"Bearer {self.stack.config.review_key(draft.organization_id)}"},
            timeout=20,
        )
        return str(answer.json().get("status")) if answer.status_code == 200 else f"http {answer.status_code}"


@pytest.fixture()
def deployment(stack: Stack, private_broker: Part, tmp_path: Path) -> Iterator[Deployment]:
    assert stack.config
    auth, writeback = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    org1 = next(o for o in ORGS if o.id == "org1")
    ehr = start_sekmet(
        tmp_path,
        "org1",
        client_id=org1.client_id,
        scopes=SEKMET_SCOPES,
        jwks_url=f"{auth}/orgs/org1/jwks.json",
        admin_token=stack.config.admin_token,
    )
    found = Deployment(stack, private_broker, tmp_path, ehr, auth, writeback)
    try:
        yield found
    finally:
        found.stop()
        ehr.stop()


def _propose(deployment: Deployment, drafts: list[DraftProposed]) -> None:
    asyncio.run(publish_events(deployment.broker.url, topics.DRAFT_PROPOSED, drafts))


def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.5)


def _copies(ehr: Ehr, draft: DraftProposed) -> tuple[int, int]:
    tag = f"{SYSTEM_DRAFT}|{draft.draft_id}"
    return len(ehr.search("RiskAssessment", _tag=tag)), len(ehr.search("Provenance", _tag=tag))


@pytest.mark.timeout(480)  # two minutes down, tiers of 10, 40 and 90 s, and a stack to start when run first
def test_an_ehr_down_for_two_minutes_gets_every_approved_draft_once_and_delays_no_other(
    deployment: Deployment, stack: Stack
) -> None:
    assert stack.config and deployment.org1_ehr.process
    deployment.start(deployment.org1_ehr.url)
    ones = [news2_draft("org1", f"Patient/down-{i}") for i in range(4)]
    twos = [news2_draft("org2", f"Patient/up-{i}") for i in range(4)]
    _propose(deployment, ones + twos)
    _until(lambda: all(deployment.status(d) == "pending" for d in ones + twos), 60, "the drafts are queued")
    deployment.org1_ehr.process.stop()
    stopped = time.monotonic()
    for one, two in zip(ones, twos, strict=True):
        deployment.approve(one)
        deployment.approve(two)
    _until(lambda: all(deployment.status(d) == "written" for d in twos), 60, "organization 2's drafts are written")
    assert time.monotonic() - stopped < DOWN_S, "organization 2's writes did not wait for organization 1's EHR"
    # Organization 1's decisions are carried out too (each first try takes the auth service's own retries
    # against a token endpoint that is down), and wait, approved and unwritten, for its EHR.
    _until(lambda: all(deployment.status(d) in ("approved", "written", "failed") for d in ones), 60, "decided")
    waiting = [deployment.status(d) for d in ones]
    assert waiting == ["approved"] * len(ones), f"organization 1's wait, approved: {waiting}"
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
    deployment.org1_ehr.process.start(timeout=60)
    _until(lambda: all(deployment.status(d) == "written" for d in ones), 180, "organization 1's drafts are written")
    org1 = Ehr(deployment.org1_ehr.url, stack.config.admin_token)
    org2 = Ehr(stack.ehrs["org2"].url, stack.config.admin_token)
    try:
        assert [_copies(org1, d) for d in ones] == [(1, 1)] * len(ones), "each written exactly once"
        assert [_copies(org2, d) for d in twos] == [(1, 1)] * len(twos)
    finally:
        org1.close()
        org2.close()


async def test_writeback_killed_between_a_resource_and_its_provenance_writes_each_once(
    deployment: Deployment, stack: Stack
) -> None:
    assert stack.config
    killed: list[str] = []
    all_approved = asyncio.Event()

    async def kill_at_the_first_provenance(request: web.Request) -> int | None:
        if request.method == "POST" and request.path.endswith("/Provenance") and not killed:
            # Hold the write until every draft is approved: killed earlier, writeback would refuse the rest.
            await all_approved.wait()
            assert deployment.processes is not None
            if not killed:  # another write may have waited here too
                deployment.processes["writeback"].signal(signal.SIGKILL)
                killed.append(request.path)
            return 503  # writeback is gone; nothing reaches the EHR
        return None

    ehr_root = deployment.org1_ehr.url.removesuffix("/fhir")
    gateway = await Gateway(ehr_root, before=kill_at_the_first_provenance).start()
    try:
        await asyncio.to_thread(deployment.start, f"{gateway.url}/fhir")  # the gateway serves meanwhile
        drafts = [news2_draft("org1", f"Patient/killed-{i}") for i in range(3)]
        await publish_events(deployment.broker.url, topics.DRAFT_PROPOSED, drafts)
        await _until_async(lambda: all(deployment.status(d) == "pending" for d in drafts), 60)
        for d in drafts:
            await asyncio.to_thread(deployment.approve, d)
        all_approved.set()
        await _until_async(lambda: bool(killed), 60)
        assert deployment.processes is not None
        await asyncio.to_thread(deployment.processes["writeback"].stop, 1)
        await asyncio.to_thread(deployment.start_writeback)
        await _until_async(lambda: all(deployment.status(d) == "written" for d in drafts), 120)
        ehr = Ehr(deployment.org1_ehr.url, stack.config.admin_token)
        try:
            assert [_copies(ehr, d) for d in drafts] == [(1, 1)] * len(drafts), "one resource and one Provenance each"
        finally:
            ehr.close()
    finally:
        await gateway.stop()


async def _until_async(done: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.5)
