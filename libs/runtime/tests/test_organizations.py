"""The organization registry: a valid file loads; every invalid one names file, organization and field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import load_registry

KEY = {"file": "keys/k.pem", "kid": "k1", "alg": "RS384"}


def _record(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "name": "Northfield General",
        "fhir_base_url": "https://ehr.example.org/fhir/",
        "backend_auth": {"client_id": "c1", "keys": [KEY]},
        "features": {"news2": ["system/Observation.read", "system/RiskAssessment.write"]},
        "ingest": {"secrets": [{"header": "X-Secret", "file": "secrets/hook"}]},
        "review": {"api_key_file": "secrets/review"},
        "workflows": {"news2": {}},
    }
    record.update(changes)
    return record


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name in ("keys/k.pem", "keys/k2.pem", "secrets/hook", "secrets/review", "secrets/client"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def _write(folder: Path, orgs: dict[str, object]) -> Path:
    path = folder / "organizations.yaml"
    path.write_text(yaml.safe_dump({"organizations": orgs}))
    return path


def _load(folder: Path, record: dict[str, object]):  # type: ignore[no-untyped-def]
    org = load_registry(_write(folder, {"org1": record})).get("org1")
    assert org is not None
    return org


def test_valid_file_loads_with_resolved_paths(folder: Path) -> None:
    registry = load_registry(_write(folder, {"org1": _record()}))
    org = registry.get("org1")
    assert org is not None and registry.ids() == ["org1"]
    assert org.fhir_base_url == "https://ehr.example.org/fhir"
    assert org.backend_auth.keys[0].file == folder / "keys" / "k.pem"
    assert org.fhir_origin == "https://ehr.example.org"
    assert org.workflows == {"news2": {}}


def _error(folder: Path, orgs: dict[str, object]) -> str:
    path = _write(folder, orgs)
    with pytest.raises(ConfigurationError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_missing_kid_names_the_field(folder: Path) -> None:
    record = _record(backend_auth={"client_id": "c1", "keys": [{"file": "keys/k.pem"}]})
    message = _error(folder, {"org1": record})
    assert "organization 'org1'" in message and "backend_auth.keys.0.kid" in message


def test_http_base_needs_the_local_development_flag(folder: Path) -> None:
    assert "https" in _error(folder, {"org1": _record(fhir_base_url="http://ehr.example.org/fhir")})
    assert _load(folder, _record(fhir_base_url="http://127.0.0.1/fhir", allow_insecure_http=True))


def test_missing_secret_file_names_the_field(folder: Path) -> None:
    (folder / "secrets" / "hook").unlink()
    message = _error(folder, {"org2": _record()})
    assert "organization 'org2'" in message and "ingest.secrets.0.file" in message and "not found" in message


def test_missing_key_file_names_the_field(folder: Path) -> None:
    (folder / "keys" / "k.pem").unlink()
    assert "backend_auth.keys.0.file" in _error(folder, {"org1": _record()})


def test_only_the_credential_holder_needs_the_credential_files(folder: Path) -> None:
    """Every service but auth loads the registry with ``credentials=False``, so their pods need not mount
    the organizations' signing keys and client secrets; every other file is still required."""
    (folder / "keys" / "k.pem").unlink()
    secret = _record(backend_auth={"client_id": "c1", "method": "client_secret_basic", "client_secret_file": "nope"})
    path = _write(folder, {"org1": _record(), "org2": secret})
    registry = load_registry(path, credentials=False)
    org1 = registry.get("org1")
    assert org1 is not None and org1.backend_auth.keys[0].file == folder / "keys" / "k.pem"
    with pytest.raises(ConfigurationError, match="backend_auth.keys.0.file"):
        load_registry(path)
    (folder / "secrets" / "hook").unlink()
    with pytest.raises(ConfigurationError, match="ingest.secrets.0.file"):
        load_registry(path, credentials=False)


def test_unknown_field_is_rejected(folder: Path) -> None:
    assert "client_secret" in _error(folder, {"org1": _record(client_secret="inline-secret")})


def test_inline_key_is_not_a_thing(folder: Path) -> None:
    record = _record(backend_auth={"client_id": "c1", "keys": [{**KEY, "pem": "-----BEGIN"}]})
    assert "backend_auth.keys.0.pem" in _error(folder, {"org1": record})


def test_unsupported_algorithm(folder: Path) -> None:
    record = _record(backend_auth={"client_id": "c1", "keys": [{**KEY, "alg": "HS256"}]})
    assert "backend_auth.keys.0.alg" in _error(folder, {"org1": record})


def test_private_key_jwt_needs_a_key_and_basic_needs_a_secret(folder: Path) -> None:
    assert "backend_auth.keys" in _error(folder, {"org1": _record(backend_auth={"client_id": "c1"})})
    basic = {"client_id": "c1", "method": "client_secret_basic"}
    assert "backend_auth.client_secret_file" in _error(folder, {"org1": _record(backend_auth=basic)})
    org = _load(folder, _record(backend_auth={**basic, "client_secret_file": "secrets/client"}))
    assert org.backend_auth.client_secret_file == folder / "secrets" / "client"


def test_kids_are_unique(folder: Path) -> None:
    record = _record(backend_auth={"client_id": "c1", "keys": [KEY, {**KEY, "file": "keys/k2.pem"}]})
    assert "own kid" in _error(folder, {"org1": record})


def test_features_need_scopes_and_workflows_are_named_mappings(folder: Path) -> None:
    assert "feature 'news2' needs" in _error(folder, {"org1": _record(features={"news2": []})})
    assert "feature name" in _error(folder, {"org1": _record(features={"News 2": ["s"]})})
    assert "workflow name 'NEWS 2'" in _error(folder, {"org1": _record(workflows={"NEWS 2": {}})})
    assert "field 'workflows.news2'" in _error(folder, {"org1": _record(workflows={"news2": "on"})})


def test_scope_styles(folder: Path) -> None:
    smart = _load(folder, _record())
    assert smart.scope_for("news2") == "system/Observation.read system/RiskAssessment.write"
    epic = _load(folder, _record(backend_auth={"client_id": "c1", "keys": [KEY], "scope_style": "omit"}))
    assert epic.scope_for("news2") is None
    entra = _load(folder, _record(backend_auth={"client_id": "c1", "keys": [KEY], "scope_style": "entra"}))
    assert entra.scope_for("news2") == "https://ehr.example.org/fhir/.default"


def test_key_rotation_windows(folder: Path) -> None:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    later = now + timedelta(minutes=10)
    record = _record(
        backend_auth={
            "client_id": "c1",
            "keys": [
                {**KEY, "retire_at": later.isoformat()},
                {"file": "keys/k2.pem", "kid": "k2", "sign_from": later.isoformat()},
            ],
        }
    )
    old, new = _load(folder, record).backend_auth.keys
    assert old.signing(now) and not new.signing(now) and new.publishable(now)
    assert not old.publishable(later) and new.signing(later)


def test_bad_organization_id(folder: Path) -> None:
    assert "field 'id'" in _error(folder, {"Org One!": _record()})


def test_empty_and_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "organizations.yaml"
    path.write_text("organizations: {}\n")
    with pytest.raises(ConfigurationError, match="non-empty mapping"):
        load_registry(path)
    path.write_text("organizations: [\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_registry(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


def test_declared_subscriptions(folder: Path) -> None:
    vitals = {"name": "vitals", "criteria": "Observation?code=http://loinc.org|85353-1", "topic": "https://t/v"}
    org = _load(
        folder, _record(ingest={"secrets": [{"header": "X-Secret", "file": "secrets/hook"}], "subscriptions": [vitals]})
    )
    [declared] = org.ingest.subscriptions
    assert (declared.resource_type, declared.content, org.ingest.numbering) == (
        "Observation",
        "full-resource",
        "global",
    )


@pytest.mark.parametrize(
    ("subscription", "field"),
    [
        ({"name": "a", "criteria": "Observation?code=x", "content": "id-only"}, "content"),
        ({"name": "a", "criteria": "Observation?code=x", "heartbeat_s": 60}, "heartbeat_s"),
        ({"name": "A b", "criteria": "Observation?code=x"}, "name"),
        ({"name": "a", "criteria": "code=x"}, "criteria"),
    ],
)
def test_declared_subscription_errors_name_the_field(folder: Path, subscription: dict[str, object], field: str) -> None:
    ingest = {"secrets": [{"header": "X-Secret", "file": "secrets/hook"}], "subscriptions": [subscription]}
    assert f"field 'ingest.subscriptions.0.{field}'" in _error(folder, {"org1": _record(ingest=ingest)})


def test_managed_subscriptions_need_a_header_secret_and_unique_names(folder: Path) -> None:
    sub = {"name": "a", "criteria": "Observation?code=x"}
    signed_only = {"signatures": [{"style": "websub", "file": "secrets/hook"}], "subscriptions": [sub]}
    assert "header secret" in _error(folder, {"org1": _record(ingest=signed_only)})
    twice = {"secrets": [{"header": "X-Secret", "file": "secrets/hook"}], "subscriptions": [sub, sub]}
    assert "unique" in _error(folder, {"org1": _record(ingest=twice)})


def test_a_subscription_may_bring_its_own_secret(folder: Path) -> None:
    own = {"name": "a", "criteria": "Observation?code=x", "secrets": [{"header": "X-Sub", "file": "secrets/client"}]}
    org = _load(
        folder, _record(ingest={"signatures": [{"style": "websub", "file": "secrets/hook"}], "subscriptions": [own]})
    )
    assert org.ingest.subscriptions[0].secrets[0].file == folder / "secrets" / "client"
    missing = {**own, "secrets": [{"header": "X-Sub", "file": "secrets/nowhere"}]}
    message = _error(
        folder,
        {
            "org1": _record(
                ingest={"signatures": [{"style": "websub", "file": "secrets/hook"}], "subscriptions": [missing]}
            )
        },
    )
    assert "ingest.subscriptions.0.secrets.0.file" in message


def test_audit_copies_need_a_feature_to_write_with(folder: Path) -> None:
    assert _load(folder, _record()).audit.write_to_ehr is False
    message = _error(folder, {"org1": _record(audit={"write_to_ehr": True})})
    assert "audit.feature 'audit' is not one of this organization's features" in message
    features = {"news2": ["system/Observation.read"], "audit": ["system/AuditEvent.write"]}
    org = _load(folder, _record(features=features, audit={"write_to_ehr": True}))
    assert org.audit.write_to_ehr and org.audit.feature == "audit"
