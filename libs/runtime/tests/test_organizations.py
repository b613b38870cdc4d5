"""The organization registry: a valid file loads; every invalid one names file, organization and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import load_registry


def _record(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "name": "Northfield General",
        "fhir_base_url": "https://ehr.example.org/fhir/",
        "backend_auth": {
            "client_id": "c1",
            "scopes": ["system/*.read"],
            "key": {"file": "keys/k.pem", "kid": "k1", "alg": "RS384"},
        },
        "ingest": {"secrets": [{"header": "X-Secret", "file": "secrets/hook"}]},
        "review": {"api_key_file": "secrets/review"},
        "workflows": {"news2": {}},
    }
    record.update(changes)
    return record


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name in ("keys/k.pem", "secrets/hook", "secrets/review"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def _write(folder: Path, orgs: dict[str, object]) -> Path:
    path = folder / "organizations.yaml"
    path.write_text(yaml.safe_dump({"organizations": orgs}))
    return path


def test_valid_file_loads_with_resolved_paths(folder: Path) -> None:
    registry = load_registry(_write(folder, {"org1": _record()}))
    org = registry.get("org1")
    assert org is not None and registry.ids() == ["org1"]
    assert org.fhir_base_url == "https://ehr.example.org/fhir"
    assert org.backend_auth.key.file == folder / "keys" / "k.pem"
    assert org.fhir_origin == "https://ehr.example.org"
    assert org.workflows.news2 is not None and org.workflows.news2.auto_approve is False


def _error(folder: Path, orgs: dict[str, object]) -> str:
    path = _write(folder, orgs)
    with pytest.raises(ConfigurationError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_missing_kid_names_the_field(folder: Path) -> None:
    record = _record(backend_auth={"client_id": "c1", "scopes": ["s"], "key": {"file": "keys/k.pem"}})
    message = _error(folder, {"org1": record})
    assert "organization 'org1'" in message and "backend_auth.key.kid" in message


def test_http_base_needs_the_local_development_flag(folder: Path) -> None:
    assert "https" in _error(folder, {"org1": _record(fhir_base_url="http://ehr.example.org/fhir")})
    registry = load_registry(
        _write(folder, {"org1": _record(fhir_base_url="http://127.0.0.1/fhir", allow_insecure_http=True)})
    )
    assert registry.get("org1") is not None


def test_missing_secret_file_names_the_field(folder: Path) -> None:
    (folder / "secrets" / "hook").unlink()
    message = _error(folder, {"org2": _record()})
    assert "organization 'org2'" in message and "ingest.secrets.0.file" in message and "not found" in message


def test_unknown_field_is_rejected(folder: Path) -> None:
    message = _error(folder, {"org1": _record(client_secret="inline-secret")})
    assert "client_secret" in message


def test_inline_key_is_not_a_thing(folder: Path) -> None:
    record = _record(
        backend_auth={
            "client_id": "c1",
            "scopes": ["s"],
            "key": {"file": "keys/k.pem", "kid": "k1", "pem": "-----BEGIN"},
        }
    )
    assert "backend_auth.key.pem" in _error(folder, {"org1": record})


def test_unsupported_algorithm(folder: Path) -> None:
    record = _record(
        backend_auth={"client_id": "c1", "scopes": ["s"], "key": {"file": "keys/k.pem", "kid": "k1", "alg": "HS256"}}
    )
    assert "backend_auth.key.alg" in _error(folder, {"org1": record})


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
