"""The live configuration: rebuilt when the registry or a file it names changes, kept when a change is bad."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import yaml

from ehrflow_runtime.live import Live, files_of
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.settings import read_secret_file


def _registry(folder: Path, orgs: tuple[str, ...] = ("org1", "org2")) -> Path:
    for org in orgs:
        (folder / f"{org}-secret").write_text(f"{org}-first")
    path = folder / "organizations.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "organizations": {
                    org: {
                        "name": org,
                        "fhir_base_url": f"https://{org}.example.org/fhir",
                        "backend_auth": {"client_id": "c", "keys": [{"file": f"{org}-secret", "kid": "k"}]},
                        "features": {"news2": ["system/*.read"]},
                        "ingest": {"secrets": [{"header": "X-Secret", "file": f"{org}-secret"}]},
                        "review": {"api_key_file": f"{org}-secret"},
                    }
                    for org in orgs
                }
            }
        )
    )
    return path


def _secrets(registry: Registry) -> dict[str, str]:
    return {org.id: read_secret_file(org.review.api_key_file).get_secret_value() for org in registry}


def test_a_secret_file_that_changes_is_read_again(tmp_path: Path) -> None:
    live = Live(_registry(tmp_path), _secrets)
    assert live.current == {"org1": "org1-first", "org2": "org2-first"}
    assert live.reload_if_changed() is False
    (tmp_path / "org1-secret").write_text("org1-second")
    assert live.reload_if_changed() is True
    assert live.current == {"org1": "org1-second", "org2": "org2-first"}


def test_an_organization_removed_from_the_registry_is_gone(tmp_path: Path) -> None:
    path = _registry(tmp_path)
    live = Live(path, _secrets)
    _registry(tmp_path, ("org1",))
    assert live.reload_if_changed() is True
    assert live.registry.ids() == ["org1"] and set(live.current) == {"org1"}


def test_a_bad_change_keeps_the_last_good_configuration(tmp_path: Path) -> None:
    path = _registry(tmp_path)
    live = Live(path, _secrets)
    path.write_text("organizations: [not, a, mapping]")
    assert live.reload_if_changed() is False
    assert live.registry.ids() == ["org1", "org2"] and live.current["org1"] == "org1-first"
    _registry(tmp_path)
    (tmp_path / "org2-secret").unlink()  # a valid registry whose build fails (a secret file gone) keeps it too
    assert live.reload_if_changed() is False
    assert live.current == {"org1": "org1-first", "org2": "org2-first"}
    (tmp_path / "org2-secret").write_text("org2-second")
    assert live.reload_if_changed() is True  # whole again: taken
    assert live.current == {"org1": "org1-first", "org2": "org2-second"}


def test_files_of_names_every_secret_file(tmp_path: Path) -> None:
    live = Live(_registry(tmp_path), _secrets)
    assert files_of(live.registry) == [tmp_path / "org1-secret", tmp_path / "org2-secret"]


async def test_sighup_checks_at_once(tmp_path: Path) -> None:
    live = Live(_registry(tmp_path), _secrets)
    changes: list[dict[str, str]] = []
    watching = asyncio.create_task(live.watch(3600, on_change=lambda: changes.append(live.current)))
    try:
        await asyncio.sleep(0)  # the handler is installed
        (tmp_path / "org2-secret").write_text("org2-second")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if changes:
                break
            await asyncio.sleep(0.05)
        assert changes == [{"org1": "org1-first", "org2": "org2-second"}]
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
