"""Per-organization mutual TLS against a real TLS server that requires client certificates.

The server (``ehrflow_devstack.tls_echo``: uvicorn with ``CERT_REQUIRED``) trusts one client CA and
records a digest of the ``Authorization`` header of every request that got through the handshake. The
organizations' FHIR clients are the services' own (``OrganizationClients`` + ``FhirClient``); only the
auth service's token answer is scripted, at its transport.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ehrflow_devstack.certs import Authority, Issued
from ehrflow_devstack.processes import Process, free_port, tcp_open
from ehrflow_runtime.errors import UpstreamUnavailable
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.tls import OrganizationClients
from ehrflow_runtime.tokens import TokenClient

pytestmark = pytest.mark.integration


@dataclass
class Ehr:
    base: str
    server: Issued
    server_ca: Authority
    client_ca: Authority
    rogue_ca: Authority
    seen: Path
    folder: Path

    def tokens_seen(self) -> list[str]:
        return self.seen.read_text().split() if self.seen.exists() else []


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehr]:
    folder = tmp_path_factory.mktemp("mtls")
    server_ca, client_ca, rogue_ca = (Authority(folder, n) for n in ("server-ca", "client-ca", "rogue-ca"))
    server = server_ca.issue("ehr", server=True)
    port, seen = free_port(), folder / "seen.log"
    proc = Process(
        "tls-ehr",
        [sys.executable, "-m", "ehrflow_devstack.tls_echo", str(port), str(server.cert), str(server.key)]
        + [str(client_ca.cert), str(seen)],
        folder / "tls-ehr.log",
        ready=lambda: tcp_open("127.0.0.1", port),
    )
    proc.start(timeout=30)
    try:
        yield Ehr(f"https://127.0.0.1:{port}/fhir", server, server_ca, client_ca, rogue_ca, seen, folder)
    finally:
        proc.stop()


def _organization(org_id: str, ehr: Ehr, client: Issued, *, ca: Path, pins: tuple[str, ...] = ()) -> Organization:
    secret = ehr.folder / "secret"
    secret.write_text("x")
    return Organization.model_validate(
        {
            "id": org_id,
            "name": org_id,
            "fhir_base_url": ehr.base,
            "backend_auth": {"client_id": "c", "keys": [{"file": secret, "kid": "k"}]},
            "features": {"news2": ["system/*.read"]},
            "ingest": {"secrets": [{"header": "X", "file": secret}]},
            "review": {"api_key_file": secret},
            "tls": {
                "client_cert_file": client.cert,
                "client_key_file": client.key,
                "ca_file": ca,
                "pinned_sha256": pins,
            },
        }
    )


def _auth_answering(org: Organization) -> TokenClient:
    """The auth service, scripted at its transport: a token that names the organization."""

    def token(_: httpx.Request) -> httpx.Response:
        body = {"access_token": f"token-of-{org.id}", "token_type": "bearer", "expires_at": 4102444800, "scope": "s"}
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(token))
    return TokenClient(http, base_url="http://auth", service_name="inference", credential=SecretStr("c"))


def _digest(org: Organization) -> str:
    return hashlib.sha256(f"Bearer token-of-{org.id}".encode()).hexdigest()


async def _read(clients: OrganizationClients, org: Organization) -> dict[str, Any]:
    return await FhirClient(clients.for_org(org), _auth_answering(org), org, "news2").read("Patient/tls-1")


async def test_the_organizations_certificate_is_accepted_and_anothers_is_refused(ehr: Ehr) -> None:
    org1 = _organization("org1", ehr, ehr.client_ca.issue("org1-client", server=False), ca=ehr.server_ca.cert)
    org2 = _organization("org2", ehr, ehr.rogue_ca.issue("org2-client", server=False), ca=ehr.server_ca.cert)
    clients = OrganizationClients(httpx.AsyncClient())
    try:
        assert (await _read(clients, org1))["id"] == "tls-1"
        assert _digest(org1) in ehr.tokens_seen()
        with pytest.raises(UpstreamUnavailable, match=r"^org2 FHIR GET Patient: ") as refused:
            await _read(clients, org2)
        assert str(refused.value).endswith("it may have refused org2's client certificate")
        assert "token-of" not in str(refused.value)
        assert _digest(org2) not in ehr.tokens_seen(), "org2's token never reached the EHR's application"
    finally:
        await clients.aclose()


@pytest.mark.parametrize("failure", ["pin", "ca"])
async def test_no_request_is_sent_over_a_handshake_that_failed_our_verification(ehr: Ehr, failure: str) -> None:
    """A wrong pin, or a server certificate our CA bundle does not verify: the connection is closed right
    after the handshake, before a byte of the request, its token included, is written."""
    client = ehr.client_ca.issue(f"org3-{failure}-client", server=False)
    if failure == "pin":
        org3 = _organization("org3", ehr, client, ca=ehr.server_ca.cert, pins=("ab" * 32,))
        expected = "the EHR's certificate is not one of the pinned ones"
    else:
        org3 = _organization("org3", ehr, client, ca=ehr.rogue_ca.cert)
        expected = "TLS handshake failed (CERTIFICATE_VERIFY_FAILED)"
    before = len(ehr.tokens_seen())
    clients = OrganizationClients(httpx.AsyncClient())
    try:
        with pytest.raises(UpstreamUnavailable) as refused:
            await _read(clients, org3)
        assert str(refused.value) == f"org3 FHIR GET Patient: {expected}"
        assert len(ehr.tokens_seen()) == before
    finally:
        await clients.aclose()


async def test_the_right_pin_passes_and_a_rotated_certificate_is_taken_without_a_restart(ehr: Ehr) -> None:
    server_pin = ehr.server.sha256
    first = ehr.client_ca.issue("org4-client", server=False)
    org4 = _organization("org4", ehr, first, ca=ehr.server_ca.cert, pins=(server_pin,))
    clients = OrganizationClients(httpx.AsyncClient())
    try:
        assert (await _read(clients, org4))["id"] == "tls-1"
        before = clients.for_org(org4)
        rotated = ehr.client_ca.issue("org4-client-next", server=False)
        first.cert.write_bytes(rotated.cert.read_bytes())  # the mounted Secret changes in place
        first.key.write_bytes(rotated.key.read_bytes())
        assert clients.for_org(org4) is not before, "a new client, made from the new files"
        assert (await _read(clients, org4))["id"] == "tls-1"
    finally:
        await clients.aclose()
