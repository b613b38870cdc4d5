"""A long broker outage neither loses events nor multiplies them (the sandbox EHR, a broker of the test's own).

An ingest replica manages a declared subscription on SEKMET and publishes to a broker the test pauses
(SIGSTOP) for two minutes while SEKMET keeps creating Observations. SEKMET's deliveries meanwhile get 503,
it retries and gives up on the subscription; ingest's background pass waits for the broker. Before,
every answer of 503 released its dedupe claims although the records were already with the producer and
were written when the broker returned, and every EHR retry and recovery pass added one more: 25
Observations became 389 records after 170 s. Now every Observation is on Kafka after the broker returns,
and none more than twice however long the pause.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ehrflow_contracts import topics
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.parts import Part
from ehrflow_devstack.processes import free_port, wait_until
from ehrflow_devstack.scenario import MARKER_CODES, Ehr, marked_observation, vital_signs_topic
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.manager import TAG_SYSTEM

pytestmark = pytest.mark.integration

PAUSE_S = 120
EVERY_S = 5


@pytest.mark.timeout(600)  # two minutes of pause, then recovery: longer than the suite's default
def test_a_two_minute_broker_pause_loses_nothing_and_copies_nothing_more_than_twice(
    stack: Stack, private_broker: Part, tmp_path: Path
) -> None:
    assert stack.config and private_broker.process is not None
    ehr = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    ehr.put(vital_signs_topic())
    marker = uuid.uuid4().hex[:8]
    name = f"pause-{marker}"
    registry = stack.registry_declaring(name, f"Observation?code={MARKER_CODES}|{marker}")
    url = f"http://127.0.0.1:{free_port()}"
    replica, _ = stack.start_service(
        "ingest",
        tmp_path / "ingest-pause.log",
        url=url,
        EHRFLOW_ORGANIZATIONS_FILE=str(registry),
        EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=private_broker.url,
        EHRFLOW_KAFKA__PUBLISH_TIMEOUT_S="2",
    )

    def managed() -> dict[str, Any] | None:
        found = ehr.search("Subscription", _tag=f"{TAG_SYSTEM}|{name}")
        return found[0] if found else None

    def ours(records: list[dict[str, Any]]) -> Counter[str]:
        return Counter(
            ref
            for r in records
            if (ref := (r.get("focus") or {}).get("reference")) in {f"Observation/{i}" for i in created}
        )

    created: list[str] = []
    paused = False
    try:
        wait_until("the subscription to be active", lambda: (managed() or {}).get("status") == "active")
        patient = f"Patient/{ehr.create({'resourceType': 'Patient', 'name': [{'family': 'Pause'}]})['id']}"
        created.append(ehr.create(marked_observation(patient, marker))["id"])
        wait_for_records(private_broker.url, topics.NOTIFICATION_RECEIVED, lambda rs: bool(ours(rs)), timeout=30)

        private_broker.process.signal(signal.SIGSTOP)
        paused = True
        started = time.monotonic()
        while time.monotonic() - started < PAUSE_S:  # the EHR keeps working; bounded: PAUSE_S / EVERY_S
            created.append(ehr.create(marked_observation(patient, marker))["id"])
            time.sleep(EVERY_S)
        private_broker.process.signal(signal.SIGCONT)
        paused = False

        everything = wait_for_records(
            private_broker.url,
            topics.NOTIFICATION_RECEIVED,
            lambda rs: len(ours(rs)) == len(created),
            timeout=180,
        )
        time.sleep(10)  # late copies, if any, would arrive now
        counts = ours(read_topic(private_broker.url, topics.NOTIFICATION_RECEIVED))
        assert len(counts) == len(created), "every Observation is on Kafka"
        assert max(counts.values()) <= 2, f"records per Observation: {sorted(counts.values())}"
        assert len(everything) >= len(created)
    finally:
        if paused:
            private_broker.process.signal(signal.SIGCONT)
        replica.stop()
        if sub := managed():
            ehr.delete(f"Subscription/{sub['id']}")
        ehr.close()
