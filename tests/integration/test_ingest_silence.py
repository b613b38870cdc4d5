"""Silence is an alert (docs/design/notifications.md item 26): no notification for 1.5 heartbeat periods.

An ingest replica creates a declared topic subscription with a one-second heartbeat on SEKMET; while
heartbeats arrive the silence gauge is 0. The subscription is then switched off on the EHR behind
ingest's back (the manager is told to look only once an hour), the heartbeats stop, and the gauge goes
to 1 for that subscription.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehrflow_devstack.metrics import metric_reaches, samples
from ehrflow_devstack.scenario import MARKER_CODES, TOPIC_URL, Ehr, vital_signs_topic
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.manager import TAG_SYSTEM

pytestmark = pytest.mark.integration


def test_a_subscription_that_stops_sending_heartbeats_is_reported_silent(stack: Stack, tmp_path: Path) -> None:
    assert stack.config
    name = f"quiet-{uuid.uuid4().hex[:8]}"
    registry = yaml.safe_load(stack.config.organizations_file.read_text())
    registry["organizations"]["org1"]["ingest"]["subscriptions"] = [
        {"name": name, "topic": TOPIC_URL, "criteria": f"Observation?code={MARKER_CODES}|{name}", "heartbeat_s": 1}
    ]
    path = stack.config.organizations_file.with_name(f"organizations-{name}.yaml")
    path.write_text(yaml.safe_dump(registry))
    ehr = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    ehr.put(vital_signs_topic())

    def managed() -> dict[str, Any] | None:
        found = ehr.search("Subscription", _tag=f"{TAG_SYSTEM}|{name}")
        return found[0] if found else None

    replica, url = stack.start_service(
        "ingest", tmp_path / "ingest.log", EHRFLOW_ORGANIZATIONS_FILE=str(path), EHRFLOW_MANAGE_EVERY_S="3600"
    )
    labels = {"organization": "org1", "subscription": name}
    try:
        deadline = time.monotonic() + 30
        while (managed() or {}).get("status") != "active":
            assert time.monotonic() < deadline, "the manager's subscription did not become active"
            time.sleep(0.3)
        time.sleep(3)  # a few heartbeats
        assert samples(url, "ehrflow_ingest_subscription_silent", **labels) == [0]  # watched, and not silent

        sub = managed()
        assert sub is not None
        ehr.put({**sub, "status": "off"})  # the EHR stops sending, and ingest is not told
        assert metric_reaches(url, "ehrflow_ingest_subscription_silent", 1, timeout=15, **labels) == 1
    finally:
        replica.stop()
        if sub := managed():
            ehr.delete(f"Subscription/{sub['id']}")
        ehr.close()
