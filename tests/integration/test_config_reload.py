"""Configuration changes take effect in every running service, without a restart.

Each test runs its own replica with its own generated configuration (on a broker of its own where the
service consumes), changes a secret file or the registry, and watches the service follow: on its own
clock (``EHRFLOW_REGISTRY_RELOAD_S``) or at once on ``SIGHUP``.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER, GeneratedConfig, generate, write_registry
from ehrflow_devstack.parts import Part, start_tansu
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not follow the change")
        time.sleep(0.2)


def _replace(config: GeneratedConfig, name: str) -> str:
    value = secrets.token_urlsafe(32)
    (config.folder / "secrets" / name).write_text(value)
    return value


def _organizations(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^ehrflow_config_organizations (\S+)$", metrics, re.M)
    assert match, "the service exports ehrflow_config_organizations"
    return float(match.group(1))


def _drop_org2(config: GeneratedConfig) -> None:
    registry = yaml.safe_load(config.organizations_file.read_text())
    del registry["organizations"]["org2"]
    config.organizations_file.write_text(yaml.safe_dump(registry))


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Part]:
    part = start_tansu(tmp_path / "broker")
    try:
        yield part
    finally:
        part.stop()


def test_ingest_refuses_a_revoked_webhook_secret_and_forgets_a_removed_organization(
    stack: Stack, broker: Part, tmp_path: Path
) -> None:
    proc, url, config = stack.start_ingest_on(broker, tmp_path, EHRFLOW_REGISTRY_RELOAD_S="0.3")
    body = samples.r4_backport()

    def post(org: str, secret: str) -> int:
        headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: secret}
        return httpx.post(f"{url}/v1/notify/{org}", json=body, headers=headers, timeout=10).status_code

    try:
        old = config.webhook_secret("org1")
        assert post("org1", old) == 200
        new = _replace(config, "org1-webhook")
        _until(lambda: post("org1", old) == 401)
        assert post("org1", new) == 200
        assert post("org2", config.webhook_secret("org2")) == 200
        _drop_org2(config)
        _until(lambda: post("org2", config.webhook_secret("org2")) == 404)
        assert _organizations(url) == 1
    finally:
        proc.stop()


def test_writeback_refuses_a_revoked_review_key_at_once_on_sighup(stack: Stack, broker: Part, tmp_path: Path) -> None:
    config = generate(tmp_path / "config")
    write_registry(config, {org: part.url for org, part in stack.ehrs.items()})
    proc, url = stack.start_service(
        "writeback",
        tmp_path / "writeback.log",
        EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
        EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker.url,
        EHRFLOW_REGISTRY_RELOAD_S="3600",  # only the signal can make it look
    )

    def drafts(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.get(f"{url}/v1/orgs/org1/drafts", headers=headers, timeout=10).status_code

    try:
        old = config.review_key("org1")
        assert drafts(old) == 200
        new = _replace(config, "org1-review")
        proc.popen.send_signal(signal.SIGHUP)
        _until(lambda: drafts(old) == 401)
        assert drafts(new) == 200
    finally:
        proc.stop()


@pytest.mark.parametrize("service", ["inference", "auth"])
def test_a_removed_organization_leaves_inference_and_auth(
    stack: Stack, broker: Part, tmp_path: Path, service: str
) -> None:
    config = generate(tmp_path / "config")
    write_registry(config, {org: part.url for org, part in stack.ehrs.items()})
    proc, url = stack.start_service(
        service,
        tmp_path / f"{service}.log",
        EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
        EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker.url,
        EHRFLOW_SERVICE_POLICY_FILE=str(config.policy_file),
        EHRFLOW_TOKEN_CACHE_KEY_FILE=str(config.cache_key_file),
        EHRFLOW_REGISTRY_RELOAD_S="0.3",
    )
    try:
        assert _organizations(url) == 2
        _drop_org2(config)
        _until(lambda: _organizations(url) == 1)
        if service == "auth":
            assert httpx.get(f"{url}/orgs/org2/jwks.json", timeout=10).status_code == 404
    finally:
        proc.stop()
