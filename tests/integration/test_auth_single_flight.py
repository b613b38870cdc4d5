"""docs/design/smart.md E3: three auth replicas, 200 concurrent requests for a cold token → one upstream request."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ehrflow_devstack.config import generate
from ehrflow_devstack.processes import Process, free_port, http_ok
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

REPLICAS = 3
REQUESTS = 200


@pytest.fixture()
def replicas(stack: Stack, tmp_path: Path) -> Iterator[tuple[list[str], str, str]]:
    """A counting token endpoint and three auth processes sharing the stack's Redis."""
    assert stack.redis
    started: list[Process] = []
    token_port = free_port()
    ehr = f"http://127.0.0.1:{token_port}"
    counter = Process(
        "token-server",
        [sys.executable, "-m", "ehrflow_devstack.token_server", str(token_port)],
        tmp_path / "token-server.log",
        ready=lambda: http_ok(f"{ehr}/stats"),
    )
    config = generate(tmp_path / "config")
    org = f"cold-{token_port}"  # a new organization every run: its token is never cached yet
    config.organizations_file.write_text(
        yaml.safe_dump(
            {
                "organizations": {
                    org: {
                        "name": "Cold start",
                        "fhir_base_url": f"{ehr}/fhir",
                        "allow_insecure_http": True,
                        "backend_auth": {"client_id": "c", "keys": [{"file": "keys/org1.pem", "kid": "k1"}]},
                        "features": {"news2": ["system/*.read"]},
                        "ingest": {"secrets": [{"header": "X-S", "file": "secrets/org1-webhook"}]},
                        "review": {"api_key_file": "secrets/org1-review"},
                    }
                }
            }
        )
    )
    try:
        counter.start(timeout=30)
        started.append(counter)
        urls = []
        for i in range(REPLICAS):
            proc, url = stack.start_service(
                "auth",
                tmp_path / f"auth-{i}.log",
                EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
                EHRFLOW_SERVICE_POLICY_FILE=str(config.policy_file),
                EHRFLOW_TOKEN_CACHE_KEY_FILE=str(config.cache_key_file),
            )
            started.append(proc)
            urls.append(url)
        yield urls, ehr, org
    finally:
        for proc in reversed(started):
            proc.stop()


async def test_cold_stampede_across_replicas_is_one_upstream_request(
    stack: Stack, replicas: tuple[list[str], str, str], tmp_path: Path
) -> None:
    urls, ehr, org = replicas
    credential = (tmp_path / "config" / "service-credentials" / "inference").read_text().strip()
    headers = {"Authorization": f"Bearer {credential}", "X-Ehrflow-Service": "inference"}
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:
        responses = await asyncio.gather(
            *[
                client.post(f"{urls[i % REPLICAS]}/internal/v1/tokens", json={"organization": org, "feature": "news2"})
                for i in range(REQUESTS)
            ]
        )
        stats = (await client.get(f"{ehr}/stats")).json()
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert stats["token_requests"] == 1
    assert stats["discovery_requests"] <= REPLICAS  # each replica discovers once, whatever the concurrency
