"""Shared pytest fixtures (loaded with ``-p ehrflow_devstack.fixtures``): the real parts tests talk to.

``stack`` is the whole local stack, started once per test session (per xdist worker). Each part in it is chosen as
``Stack`` chooses: an explicit URL from the environment, else a container when a Docker engine
answers, else a local process from a pip-installed binary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehrflow_devstack.parts import Part, start_tansu
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.organizations import Organization

STATE = Path(
    os.environ.get("EHRFLOW_TEST_STATE") or Path(__file__).resolve().parents[3] / ".ehrflow" / "test"
) / os.environ.get("PYTEST_XDIST_WORKER", "main")
"""Where the test stack keeps its state and logs; set ``EHRFLOW_TEST_STATE`` to run two sessions at once.
Each pytest-xdist worker (``make test`` runs two) has a stack of its own, in a folder of its own."""


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with Stack(STATE / "stack", progress=False) as running:
        yield running


@pytest.fixture()
def private_broker(tmp_path: Path) -> Iterator[Part]:
    """A broker of the test's own, which the test may pause or stop (always a local Tansu process)."""
    part = start_tansu(tmp_path)
    try:
        yield part
    finally:
        part.stop()


@pytest.fixture()
def organization(tmp_path: Path) -> Organization:
    """Organization ``org1`` at ``https://ehr.example.org/fhir``, its secret files holding ``x`` (unit tests)."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    return Organization.model_validate(
        {
            "id": "org1",
            "name": "Northfield General",
            "fhir_base_url": "https://ehr.example.org/fhir",
            "backend_auth": {"client_id": "c", "keys": [{"file": secret, "kid": "k"}]},
            "features": {"news2": ["system/*.read"]},
            "ingest": {"secrets": [{"header": "X", "file": secret}]},
            "review": {"api_key_file": secret},
        }
    )


SERVICE_LOG = re.compile(r"^(auth|ingest|inference|writeback)[\w-]*\.log$")
LEAKS = {
    "a JWT (access token, client assertion or id_token)": re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]*"),
    "a private key": re.compile(r"PRIVATE KEY-----"),
}


@pytest.fixture(scope="session", autouse=True)
def no_secrets_in_service_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no ehrflow service log, of the shared stack or of any test's own processes,
    holds a token, an assertion or a key. The end-to-end test checks names, birth dates and
    every known secret as well."""
    yield
    roots = [STATE, tmp_path_factory.getbasetemp()]
    logs = [p for root in roots if root.exists() for p in root.rglob("*.log") if SERVICE_LOG.match(p.name)]
    leaks = [
        f"{what} in {log}"
        for log in logs
        for what, pattern in LEAKS.items()
        if pattern.search(log.read_text(errors="replace"))
    ]
    assert not leaks, leaks
