"""Inference's delivery on real parts: retry tiers and dead letters, replay, a model server killed mid-run, and
two replicas sharing the work.

Each test runs inference processes of its own against a broker of its own (so the shared stack's inference
does not take the events), reading the stack's sandbox EHR and Redis, and publishes notification events
itself, exactly as ingest would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehrflow_contracts import NotificationReceived, topics
from ehrflow_devstack.kafka_read import publish_events, read_records
from ehrflow_devstack.mock_fhir import event_about
from ehrflow_devstack.model_gateway import Gateway
from ehrflow_devstack.model_servers import start_mlserver
from ehrflow_devstack.parts import Part
from ehrflow_devstack.processes import Process, free_port
from ehrflow_devstack.scenario import Ehr, PatientCase, Vitals
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)


def _registry(stack: Stack, name: str, readmission_model: dict[str, Any] | None = None) -> Path:
    """The stack's organization file with ``readmission_model`` laid over readmission's model settings; beside
    it (secrets resolve alike)."""
    assert stack.config
    data = yaml.safe_load(stack.config.organizations_file.read_text())
    for org in data["organizations"].values():
        org["workflows"]["readmission"]["model"].update(readmission_model or {})
    path = stack.config.organizations_file.with_name(f"organizations-{name}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def _inference(stack: Stack, broker: Part, registry: Path, log: Path, delays: str = "[1, 1, 1]") -> Process:
    process, _ = stack.start_service(
        "inference",
        log,
        EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker.url,
        EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE="false",
        EHRFLOW_ORGANIZATIONS_FILE=str(registry),
        EHRFLOW_RETRY__DELAYS_S=delays,
    )
    return process


def _ehr(stack: Stack) -> Ehr:
    assert stack.config
    return Ehr(stack.ehrs["org1"].url, stack.config.admin_token)


def _trigger_event(ehr: Ehr, case: PatientCase) -> NotificationReceived:
    """The notification event ingest would publish for the case's trigger (full-resource)."""
    resource = ehr.http.get(f"/{case.ids['trigger']}").json()
    return event_about(resource, patient=case.ids["patient"])


def _stay(ehr: Ehr, n: int, birth: str = "1950-01-01") -> PatientCase:
    return ehr.record_patient(
        PatientCase(f"stay-{n}", "Test", f"Stay{n}", birth, None, "drafted", workflow="readmission")
    )


async def _publish(broker: Part, events: list[NotificationReceived]) -> None:
    await publish_events(broker.url, topics.NOTIFICATION_RECEIVED, events)


async def _until(
    broker: Part, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r, _ in await read_records(broker.url, topic)]
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: not done after {timeout:.0f}s ({len(records)} records)")
        await asyncio.sleep(0.5)


def _drafted(log: Path) -> int:
    """Drafts a replica made, from its log (one JSON line each)."""
    return sum(
        json.loads(line).get("msg") == "drafted" for line in log.read_text().splitlines() if line.startswith("{")
    )


def _drafts_by_patient(drafts: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for d in drafts:
        found.setdefault(d["patient"], set()).add(d["draft_id"])
    return found


async def test_an_event_that_always_fails_is_dead_lettered_while_others_are_drafted_and_replays_once(
    stack: Stack, private_broker: Part, tmp_path: Path
) -> None:
    assert stack.models
    gateway = await Gateway(stack.models["readmission"].url).start()
    failing_age = b'"data": [96.'  # the failing patient's age (born 1930) starts the features

    def always_503_for_the_old_patient(body: bytes) -> int | None:
        return 503 if failing_age in body.replace(b'":[', b'": [') else None

    gateway.refuse_when = always_503_for_the_old_patient
    ehr = _ehr(stack)
    inference = _inference(
        stack,
        private_broker,
        _registry(stack, "retries", {"endpoint": gateway.url, "breaker_open_s": 1}),
        tmp_path / "inference.log",
    )
    try:
        failing = _stay(ehr, 0, birth="1930-01-01")
        others = [_stay(ehr, n) for n in (1, 2)]
        first = _trigger_event(ehr, failing)
        await _publish(private_broker, [first, *(_trigger_event(ehr, c) for c in others)])
        letters = await _until(
            private_broker,
            topics.DEAD_LETTER,
            lambda rs: any(r["payload"].get("event_id") == first.event_id for r in rs),
        )
        [letter] = [r for r in letters if r["payload"].get("event_id") == first.event_id]
        assert letter["source_topic"] == topics.INFERENCE_RETRIES[-1]
        assert "ModelUnavailable" in letter["error"] and "(after 4 attempts)" in letter["error"]
        drafts = [r for r, _ in await read_records(private_broker.url, topics.DRAFT_PROPOSED)]
        drafted = _drafts_by_patient(drafts)
        assert set(drafted) == {c.ids["patient"] for c in others}  # the others went on meanwhile
        assert all(d["received_at"] < letter["received_at"] for d in drafts)

        gateway.refuse_when = None  # the fix
        listing = _cli(private_broker, "dead-letters", "list", "--org", "org1")
        assert first.event_id in listing.stdout and "Jane" not in listing.stdout
        replay = _cli(private_broker, "dead-letters", "replay", "--event-id", first.event_id)
        assert replay.returncode == 0 and f"replayed {first.event_id}" in replay.stdout
        drafts = await _until(
            private_broker, topics.DRAFT_PROPOSED, lambda rs: failing.ids["patient"] in _drafts_by_patient(rs)
        )
        await asyncio.sleep(3)  # a second draft, if the replay made one, would be here by now
        drafts = [r for r, _ in await read_records(private_broker.url, topics.DRAFT_PROPOSED)]
        assert [d["patient"] for d in drafts].count(failing.ids["patient"]) == 1
    finally:
        inference.stop()
        await gateway.stop()
        ehr.close()


def _cli(broker: Part, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own command)
        [sys.executable, "-c", "from ehrflow_inference.main import main; main()", *args],
        env={"EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": broker.url, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_model_server_killed_mid_run_loses_no_event(stack: Stack, private_broker: Part, tmp_path: Path) -> None:
    port = free_port()
    server = start_mlserver(tmp_path, port=port)
    ehr = _ehr(stack)
    # Retries outlast a restart: three tiers of 3, 6 and 12 s, a circuit that opens for 2 s.
    model = {"endpoint": server.url, "breaker_open_s": 2}
    registry = _registry(stack, "kill", model)
    inference = _inference(stack, private_broker, registry, tmp_path / "inference.log", delays="[3, 6, 12]")
    try:
        cases = [_stay(ehr, n) for n in range(10, 18)]
        await _publish(private_broker, [_trigger_event(ehr, c) for c in cases[:4]])
        await _until(private_broker, topics.DRAFT_PROPOSED, lambda rs: len(rs) >= 1)
        assert server.process is not None and server.process.popen is not None
        server.process.signal(signal.SIGKILL)  # mid-run: drafts of the first events may still be in flight
        server.process.popen.wait(10)
        await _publish(private_broker, [_trigger_event(ehr, c) for c in cases[4:]])
        await asyncio.sleep(1.5)
        server = start_mlserver(tmp_path, port=port)
        drafts = await _until(private_broker, topics.DRAFT_PROPOSED, lambda rs: len(_drafts_by_patient(rs)) == 8)
        by_patient = _drafts_by_patient(drafts)
        assert set(by_patient) == {c.ids["patient"] for c in cases}
        assert all(len(ids) == 1 for ids in by_patient.values())  # redelivered or retried, one draft each
        letters = [r for r, _ in await read_records(private_broker.url, topics.DEAD_LETTER)]
        assert letters == []
    finally:
        inference.stop()
        server.stop()
        ehr.close()


async def test_two_replicas_share_the_partitions_and_one_stopping_loses_and_duplicates_nothing(
    stack: Stack, private_broker: Part, tmp_path: Path
) -> None:
    ehr = _ehr(stack)
    registry = _registry(stack, "replicas")
    logs = [tmp_path / "inference-a.log", tmp_path / "inference-b.log"]
    replicas = [_inference(stack, private_broker, registry, log) for log in logs]
    try:
        cases = [
            ehr.record_patient(PatientCase(f"p{n}", "Test", f"Replica{n}", "1950-01-01", HIGH, "high", 13))
            for n in range(16)
        ]
        events = []
        for case in cases:
            resource = ehr.http.get(f"/{case.ids['panel']}").json()
            events.append(event_about(resource, patient=case.ids["patient"]))
        sent = 0
        deadline = time.monotonic() + 120
        while not all(_drafted(log) for log in logs):  # both have partitions, and work
            assert time.monotonic() < deadline and sent < len(events), "both replicas drafting"
            if sent < len(events) // 2 or sum(map(_drafted, logs)) >= sent:  # the ones sent are drafted: send more
                await _publish(private_broker, events[sent : sent + 2])
                sent += 2
            await asyncio.sleep(0.5)
        replicas[0].signal(signal.SIGKILL)  # no goodbye: its partitions move after the session times out
        await _publish(private_broker, events[sent:])
        drafts = await _until(
            private_broker, topics.DRAFT_PROPOSED, lambda rs: len(_drafts_by_patient(rs)) == 16, timeout=180
        )
        by_patient = _drafts_by_patient(drafts)
        assert set(by_patient) == {c.ids["patient"] for c in cases}
        assert all(len(ids) == 1 for ids in by_patient.values())
        assert _drafted(logs[1]) > 0
    finally:
        for replica in replicas:
            replica.stop()
        ehr.close()
