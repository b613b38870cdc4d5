"""Configuration the local stack generates: keys, secrets and the organization registry.

Organization 1 signs with RS384, organization 2 with ES384. Secrets are files, as in Kubernetes.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from redis.asyncio import Redis

from ehrflow_runtime.sealing import Sealer, read_key_file
from ehrflow_writeback.queue import ReviewQueue

SEKMET_SCOPES = (
    "system/*.read system/RiskAssessment.write system/DocumentReference.write system/Provenance.write "
    "system/Subscription.write system/Basic.write system/AuditEvent.write"
)
"""What the sandbox EHRs grant our client; each feature asks for a subset (FEATURES)."""

WEBHOOK_HEADER = "X-Ehrflow-Webhook-Secret"

FEATURES = {
    "news2": [
        "system/Patient.read",
        "system/Observation.read",
        "system/Condition.read",
        "system/RiskAssessment.read",
        "system/RiskAssessment.write",
        "system/Provenance.read",
        "system/Provenance.write",
    ],
    "readmission": [
        "system/Patient.read",
        "system/Encounter.read",
        "system/Condition.read",
        "system/MedicationRequest.read",
        "system/RiskAssessment.write",
        "system/Provenance.write",
    ],
    "tumor-board": [
        "system/Task.read",
        "system/Condition.read",
        "system/DiagnosticReport.read",
        "system/MedicationRequest.read",
        "system/Procedure.read",
        "system/Observation.read",
        "system/DocumentReference.read",
        "system/Binary.read",
        "system/DocumentReference.write",
        "system/Provenance.write",
    ],
    "audit": ["system/AuditEvent.write"],
    "subscriptions": [
        "system/Subscription.read",
        "system/Subscription.write",
        "system/Basic.write",
        "system/Observation.read",
    ],
}
"""What each organization enables in the local stack, and the SMART scopes each feature asks for."""

SEKMET_GAPS = ["RiskAssessment.create"]
"""SEKMET 0.1.1 accepts RiskAssessment writes but leaves the type out of its CapabilityStatement."""

WORKFLOW_FEATURES = ["news2", "readmission", "tumor-board"]

POLICY = {"inference": WORKFLOW_FEATURES, "writeback": [*WORKFLOW_FEATURES, "audit"], "ingest": ["subscriptions"]}
"""Services that may call the auth service's internal token API, and for which features (every organization)."""

INTROSPECTORS = {"writeback"}
"""Services that may ask the auth service whose clinician session a request carries (the review API)."""


@dataclass(frozen=True)
class OrgSpec:
    id: str
    name: str
    alg: str

    @property
    def client_id(self) -> str:
        return f"ehrflow-{self.id}"


ORGS = (OrgSpec("org1", "Northfield General Hospital", "RS384"), OrgSpec("org2", "Riverside Health", "ES384"))


def _write_secret(path: Path, value: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value)
    path.chmod(0o600)
    return path


def _private_key_pem(alg: str) -> bytes:
    key = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class GeneratedConfig:
    folder: Path
    organizations_file: Path
    credentials_dir: Path
    policy_file: Path
    cache_key_file: Path
    admin_token: str
    queue_key_file: Path
    """Seals drafts in writeback's review queue."""

    def review_queue(self, redis: Redis) -> ReviewQueue:
        """The review queue as this configuration's writeback keeps it (tests read and seed it)."""
        return ReviewQueue(redis, Sealer(read_key_file(self.queue_key_file, "review queue key")))

    def secret(self, name: str) -> str:
        return (self.folder / "secrets" / name).read_text().strip()

    def webhook_secret(self, org: str) -> str:
        return self.secret(f"{org}-webhook")

    def review_key(self, org: str) -> str:
        return self.secret(f"{org}-review")

    def service_credential(self, service: str) -> str:
        return (self.credentials_dir / service).read_text().strip()


def generate(folder: Path) -> GeneratedConfig:
    """Keys and secrets (once per state folder); the registry is written by ``write_registry``."""
    folder.mkdir(parents=True, exist_ok=True)
    for org in ORGS:
        key = folder / "keys" / f"{org.id}.pem"
        if not key.exists():
            _write_secret(key, _private_key_pem(org.alg))
        for kind in ("webhook", "review"):
            path = folder / "secrets" / f"{org.id}-{kind}"
            if not path.exists():
                _write_secret(path, secrets.token_urlsafe(32).encode())
    credentials = folder / "service-credentials"
    for service in POLICY:
        if not (credentials / service).exists():
            _write_secret(credentials / service, secrets.token_urlsafe(32).encode())
    policy = folder / "service-policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "services": {
                    name: {
                        "credential_file": f"service-credentials/{name}",
                        "organizations": ["*"],
                        "features": features,
                        "introspect_sessions": name in INTROSPECTORS,
                    }
                    for name, features in POLICY.items()
                }
            }
        ),
        encoding="utf-8",
    )
    cache_key = folder / "secrets" / "token-cache-key"
    if not cache_key.exists():
        _write_secret(cache_key, base64.b64encode(os.urandom(32)))
    queue_key = folder / "secrets" / "review-queue-key"
    if not queue_key.exists():
        _write_secret(queue_key, base64.b64encode(os.urandom(32)))
    admin = folder / "secrets" / "ehr-admin-token"
    if not admin.exists():
        _write_secret(admin, secrets.token_urlsafe(24).encode())
    return GeneratedConfig(
        folder, folder / "organizations.yaml", credentials, policy, cache_key, admin.read_text().strip(), queue_key
    )


def workflows(models: dict[str, str] | None) -> dict[str, dict[str, object]]:
    """The workflows each organization of the local stack runs, with its overrides of the shipped contracts:
    NEWS2 always; readmission and the tumor-board summary where ``models`` gives their servers' URLs."""
    chosen: dict[str, dict[str, object]] = {"news2": {"capability_exceptions": SEKMET_GAPS}}
    if models and "readmission" in models:
        chosen["readmission"] = {"capability_exceptions": SEKMET_GAPS, "model": {"endpoint": models["readmission"]}}
    if models and "tumor-board" in models:
        chosen["tumor-board"] = {"model": {"endpoint": models["tumor-board"]}}
    return chosen


def write_registry(config: GeneratedConfig, fhir_bases: dict[str, str], models: dict[str, str] | None = None) -> Path:
    """The organization registry for the stack's two sandbox EHRs (see README for every field); ``models``
    names the model servers' URLs by workflow."""
    organizations = {}
    for org in ORGS:
        organizations[org.id] = {
            "name": org.name,
            "fhir_base_url": fhir_bases[org.id],
            "allow_insecure_http": True,
            "backend_auth": {
                "client_id": org.client_id,
                "keys": [{"file": f"keys/{org.id}.pem", "kid": f"{org.id}-key-1", "alg": org.alg}],
            },
            "features": FEATURES,
            "ingest": {"secrets": [{"header": WEBHOOK_HEADER, "file": f"secrets/{org.id}-webhook"}]},
            "review": {"api_key_file": f"secrets/{org.id}-review"},
            "workflows": workflows(models),
            # Organization 1 keeps a copy of its audit trail in its EHR; organization 2 does not.
            "audit": {"write_to_ehr": org.id == "org1"},
        }
    config.organizations_file.write_text(
        "# Generated by ehrflow-devstack for the local stack. See README: Organization file reference.\n"
        + yaml.safe_dump({"organizations": organizations}, sort_keys=False),
        encoding="utf-8",
    )
    return config.organizations_file
