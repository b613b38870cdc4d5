"""Sender authentication per organization: header secrets, rotation, constant-time comparison."""

from __future__ import annotations

from pathlib import Path

from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_runtime.organizations import Organization


def _org(tmp_path: Path, org_id: str, secrets: list[tuple[str, str]]) -> Organization:
    files = []
    for i, (header, value) in enumerate(secrets):
        path = tmp_path / f"{org_id}-{i}"
        path.write_text(value + "\n")
        files.append({"header": header, "file": path})
    key = tmp_path / "key.pem"
    key.write_text("x")
    return Organization.model_validate(
        {
            "id": org_id,
            "name": org_id,
            "fhir_base_url": "https://ehr.example.org/fhir",
            "backend_auth": {"client_id": "c", "keys": [{"file": key, "kid": "k"}]},
            "features": {"news2": ["s"]},
            "ingest": {"secrets": files},
            "review": {"api_key_file": key},
        }
    )


def test_each_organization_accepts_only_its_own_secret(tmp_path: Path) -> None:
    secrets = SenderSecrets([_org(tmp_path, "org1", [("X-Hook", "one")]), _org(tmp_path, "org2", [("X-Hook", "two")])])
    assert secrets.authenticate("org1", {"x-hook": "one"})
    assert not secrets.authenticate("org1", {"x-hook": "two"})
    assert secrets.authenticate("org2", {"x-hook": "two"})
    assert not secrets.authenticate("org1", {})
    assert not secrets.authenticate("org3", {"x-hook": "one"})


def test_two_secrets_during_rotation(tmp_path: Path) -> None:
    secrets = SenderSecrets([_org(tmp_path, "org1", [("X-Hook", "old"), ("X-Hook-Next", "new")])])
    assert secrets.authenticate("org1", {"x-hook": "old"})
    assert secrets.authenticate("org1", {"x-hook-next": "new"})
    assert not secrets.authenticate("org1", {"x-hook": "new"})


def test_authorization_bearer_header(tmp_path: Path) -> None:
    secrets = SenderSecrets([_org(tmp_path, "org1", [("Authorization", "s3cret")])])
    assert secrets.authenticate("org1", {"authorization": "Bearer s3cret"})
    assert not secrets.authenticate("org1", {"authorization": "Bearer s3cre"})
