"""An empty classic ping makes ingest go and look (docs/design/notifications.md item 2).

An ingest replica manages a declared classic subscription without payload: SEKMET answers each matching
change with an empty ``POST``. Ingest publishes the ping as an empty event and then searches the
subscription's criteria since the last event seen, publishing what changed marked ``recovered``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehrflow_contracts import topics
from ehrflow_devstack.kafka_read import read_topic, wait_for_records
from ehrflow_devstack.scenario import MARKER_CODES, Ehr, marked_observation
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.manager import TAG_SYSTEM

pytestmark = pytest.mark.integration


def test_an_empty_ping_is_published_and_followed_by_a_search(stack: Stack, tmp_path: Path) -> None:
    assert stack.config and stack.broker
    marker = uuid.uuid4().hex[:8]
    name = f"ping-{marker}"
    registry = yaml.safe_load(stack.config.organizations_file.read_text())
    registry["organizations"]["org2"]["ingest"]["subscriptions"] = [
        {"name": name, "criteria": f"Observation?code={MARKER_CODES}|{marker}", "content": "empty"}
    ]
    path = stack.config.organizations_file.with_name(f"organizations-{name}.yaml")
    path.write_text(yaml.safe_dump(registry))
    ehr = Ehr(stack.ehrs["org2"].url, stack.config.admin_token)

    def managed() -> dict[str, Any] | None:
        found = ehr.search("Subscription", _tag=f"{TAG_SYSTEM}|{name}")
        return found[0] if found else None

    def pings() -> int:
        return sum(
            1
            for r in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)  # type: ignore[union-attr]
            if r["organization_id"] == "org2" and r["flavour"] == "r4-classic" and r.get("focus") is None
        )

    replica, _ = stack.start_service("ingest", tmp_path / "ingest.log", EHRFLOW_ORGANIZATIONS_FILE=str(path))
    try:
        deadline = time.monotonic() + 30
        while (managed() or {}).get("status") != "active":  # classic: active as soon as created
            assert time.monotonic() < deadline, "the manager did not create the subscription"
            time.sleep(0.3)
        assert "payload" not in managed()["channel"]  # type: ignore[index]

        pings_before = pings()
        patient = ehr.create({"resourceType": "Patient", "name": [{"family": "Ping"}]})
        changed = ehr.create(marked_observation(f"Patient/{patient['id']}", marker))["id"]
        records = wait_for_records(
            stack.broker.url,
            topics.NOTIFICATION_RECEIVED,
            lambda recs: any((r.get("focus") or {}).get("reference") == f"Observation/{changed}" for r in recs),
            timeout=60,
        )
        [found] = [r for r in records if (r.get("focus") or {}).get("reference") == f"Observation/{changed}"]
        assert found["recovered"] is True and found["resource"]["code"]["coding"][0]["code"] == marker
        assert found["organization_id"] == "org2"
        assert pings() >= pings_before + 1  # the ping itself is on the bus too, as an empty event
    finally:
        replica.stop()
        if sub := managed():
            ehr.delete(f"Subscription/{sub['id']}")
        ehr.close()
