"""Self-healing subscriptions against the sandbox EHR (docs/design/notifications.md item 28).

An ingest replica manages a declared subscription: it creates it on SEKMET, which handshakes it active.
The replica is then stopped long enough for SEKMET to give up and switch the subscription to ``error``;
Observations created meanwhile are never delivered. When the replica returns, the subscription is active
again and every Observation created meanwhile has been published (marked recovered), each exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ehrflow_contracts import topics
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.processes import free_port, wait_until
from ehrflow_devstack.scenario import MARKER_CODES, Ehr, marked_observation, vital_signs_topic
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.manager import TAG_SYSTEM

pytestmark = pytest.mark.integration


@pytest.fixture()
def ehr(stack: Stack) -> Iterator[Ehr]:
    assert stack.config
    client = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    client.put(vital_signs_topic())
    yield client
    client.close()


def test_a_subscription_the_ehr_gave_up_on_is_reactivated_and_backfilled(
    stack: Stack, ehr: Ehr, tmp_path: Path
) -> None:
    assert stack.broker
    marker = uuid.uuid4().hex[:8]
    name = f"heal-{marker}"
    registry = stack.registry_declaring(name, f"Observation?code={MARKER_CODES}|{marker}")
    url = f"http://127.0.0.1:{free_port()}"  # the replica comes back where the EHR expects it

    def start(log: str) -> Any:
        proc, _ = stack.start_service("ingest", tmp_path / log, url=url, EHRFLOW_ORGANIZATIONS_FILE=str(registry))
        return proc

    def managed() -> dict[str, Any] | None:
        found = ehr.search("Subscription", _tag=f"{TAG_SYSTEM}|{name}")
        return found[0] if found else None

    def status_is(status: str) -> Callable[[], bool]:
        return lambda: (managed() or {}).get("status") == status

    def published(observation_ids: list[str]) -> Callable[[list[dict[str, Any]]], bool]:
        wanted = {f"Observation/{i}" for i in observation_ids}
        return lambda records: wanted <= {(r.get("focus") or {}).get("reference") for r in records}

    patient = f"Patient/{ehr.create({'resourceType': 'Patient', 'name': [{'family': 'Heal'}]})['id']}"
    replica = start("ingest-heal-1.log")
    try:
        wait_until("the manager's subscription to be active", status_is("active"))
        first = ehr.create(marked_observation(patient, marker))["id"]
        wait_for_records(stack.broker.url, topics.NOTIFICATION_RECEIVED, published([first]), timeout=30)

        replica.stop()
        missed = [ehr.create(marked_observation(patient, marker))["id"]]  # SEKMET tries, fails, gives up
        wait_until("SEKMET to switch the subscription to error", status_is("error"), timeout=60)
        missed += [ehr.create(marked_observation(patient, marker))["id"] for _ in range(2)]  # never delivered

        replica = start("ingest-heal-2.log")
        wait_until("the subscription to be active again", status_is("active"))
        wait_for_records(stack.broker.url, topics.NOTIFICATION_RECEIVED, published(missed), timeout=60)
        time.sleep(3)  # time for any duplicate to show up
        events = [
            r
            for r in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)
            if (r.get("focus") or {}).get("reference") in {f"Observation/{i}" for i in [first, *missed]}
        ]
        counts = {i: sum(r["focus"]["reference"] == f"Observation/{i}" for r in events) for i in [first, *missed]}
        assert counts == dict.fromkeys([first, *missed], 1)
        assert {r["focus"]["reference"].split("/")[1]: r["recovered"] for r in events} == {
            first: False,
            **dict.fromkeys(missed, True),
        }
    finally:
        replica.stop()
        if sub := managed():
            ehr.delete(f"Subscription/{sub['id']}")
