"""With the broker stopped, ingest answers 503 — never 200 — and says it is not ready."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.parts import Part
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def test_broker_stopped_means_503(stack: Stack, private_broker: Part, tmp_path: Path) -> None:
    subscription = f"broker-down-{uuid.uuid4().hex[:8]}"  # events no earlier run has recorded
    ingest, url, config = stack.start_ingest_on(private_broker, tmp_path, EHRFLOW_KAFKA__PUBLISH_TIMEOUT_S="2")
    try:
        headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: config.webhook_secret("org1")}

        def post(n: int) -> int:
            body = json.dumps(
                samples.r4_backport(events=[(n, samples.observation(f"o{n}"))], subscription=subscription)
            )
            return httpx.post(f"{url}/v1/notify/org1", content=body, headers=headers, timeout=30).status_code

        assert post(1) == 200
        assert private_broker.process is not None
        private_broker.process.stop()
        statuses = [post(n) for n in range(2, 6)]
        assert statuses == [503] * 4
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
    finally:
        ingest.stop()
