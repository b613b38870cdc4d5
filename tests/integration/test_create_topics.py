"""The Helm chart's topic Job: ``python -m ehrflow_runtime.create_topics`` against a real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ehrflow_contracts import topics
from ehrflow_devstack.parts import Part

pytestmark = pytest.mark.integration


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_the_job_creates_every_topic_and_may_run_again(private_broker: Part) -> None:
    assert not set(topics.ALL) & asyncio.run(_topics(private_broker.url))
    env = {
        **os.environ,
        "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": private_broker.url,
        "EHRFLOW_KAFKA__CREATE_TOPICS": "false",  # as the chart sets it for the services: the Job creates anyway
        "EHRFLOW_KAFKA__PARTITIONS": "2",
    }
    for _ in range(2):  # a pre-upgrade hook runs it again over existing topics
        done = subprocess.run(  # noqa: S603 (this environment's interpreter)
            [sys.executable, "-m", "ehrflow_runtime.create_topics"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert set(topics.ALL) <= asyncio.run(_topics(private_broker.url))
