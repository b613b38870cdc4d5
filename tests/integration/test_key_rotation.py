"""Key rotation under steady token traffic against SEKMET: no request fails (docs/design/smart.md F2).

SEKMET caches a client's JWKS for 300 s and never refetches early, so the new key must be published
for longer than that before it signs: this test takes about six minutes, by design.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ehrflow_auth.rotate import rotate
from ehrflow_contracts import topics
from ehrflow_devstack.config import FEATURES, SEKMET_SCOPES, generate
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.parts import Part, start_sekmet
from ehrflow_devstack.processes import free_port
from ehrflow_devstack.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("waits")]

ORG = "rot"
SEKMET_JWKS_CACHE_S = 300
PUBLISH_FOR_S = SEKMET_JWKS_CACHE_S + 10
RETIRE_AFTER_S = 20


@pytest.fixture()
def rotating(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, Part, Path, str]]:
    assert stack.config
    config = generate(tmp_path / "config")
    auth_url = f"http://127.0.0.1:{free_port()}"
    ehr = start_sekmet(
        tmp_path,
        ORG,
        client_id="ehrflow-rot",
        scopes=SEKMET_SCOPES,
        jwks_url=f"{auth_url}/orgs/{ORG}/jwks.json",
        admin_token=config.admin_token,
    )
    shutil.copy(config.folder / "keys" / "org1.pem", config.folder / "keys" / "rot-1.pem")
    config.organizations_file.write_text(
        yaml.safe_dump(
            {
                "organizations": {
                    ORG: {
                        "name": "Rotation",
                        "fhir_base_url": ehr.url,
                        "allow_insecure_http": True,
                        "backend_auth": {
                            "client_id": "ehrflow-rot",
                            "keys": [{"file": "keys/rot-1.pem", "kid": "rot-1"}],
                        },
                        "features": FEATURES,
                        "ingest": {"secrets": [{"header": "X-S", "file": "secrets/org1-webhook"}]},
                        "review": {"api_key_file": "secrets/org1-review"},
                    }
                }
            }
        )
    )
    auth = None
    try:
        auth, _ = stack.start_service(
            "auth",
            tmp_path / "auth.log",
            url=auth_url,
            EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
            EHRFLOW_SERVICE_POLICY_FILE=str(config.policy_file),
            EHRFLOW_TOKEN_CACHE_KEY_FILE=str(config.cache_key_file),
            EHRFLOW_REGISTRY_RELOAD_S="1",
        )
        yield auth_url, ehr, config.organizations_file, config.service_credential("inference")
    finally:
        if auth is not None:
            auth.stop()
        ehr.stop()


@pytest.mark.timeout(600)  # SEKMET's 300 s JWKS cache has to run out before the new key may sign
def test_rotation_under_steady_traffic_fails_nothing(stack: Stack, rotating: tuple[str, Part, Path, str]) -> None:
    auth_url, ehr, registry, credential = rotating
    headers = {"Authorization": f"Bearer {credential}", "X-Ehrflow-Service": "inference"}
    # min_ttl close to SEKMET's 300 s lifetime: every request makes auth sign a new assertion upstream.
    ask = {"organization": ORG, "feature": "news2", "min_ttl": 290}
    failures: list[str] = []
    requests, new_kid, switch = 0, None, None
    started = time.monotonic()
    with httpx.Client(timeout=20) as client:
        while switch is None or time.monotonic() < switch + RETIRE_AFTER_S + 10:
            token = client.post(f"{auth_url}/internal/v1/tokens", json=ask, headers=headers)
            requests += 1
            if token.status_code != 200:
                failures.append(f"token {token.status_code}")
            else:
                read = client.get(
                    f"{ehr.url}/Patient",
                    params={"_count": "1"},
                    headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                )
                if read.status_code != 200:
                    failures.append(f"FHIR read {read.status_code}")
            if new_kid is None and time.monotonic() - started > 3:
                new_kid = rotate(
                    registry,
                    ORG,
                    publish_for=timedelta(seconds=PUBLISH_FOR_S),
                    retire_after=timedelta(seconds=RETIRE_AFTER_S),
                    now=datetime.now(UTC),
                )
                switch = time.monotonic() + PUBLISH_FOR_S
            time.sleep(0.5)
        jwks = client.get(f"{auth_url}/orgs/{ORG}/jwks.json").json()
    assert failures == [] and requests > 600
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]
    assert stack.broker
    audit = [r for r in read_topic(stack.broker.url, topics.AUDIT) if r["organization_id"] == ORG]
    kids = [r["details"]["kid"] for r in audit if r["action"] == "token.issued"]
    assert kids[0] == "rot-1" and kids[-1] == new_kid
    assert any(r["action"] == "key.rotated" and r["details"]["kid"] == new_kid for r in audit)
