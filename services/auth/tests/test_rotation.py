"""Key rotation as data: publish first, sign later, retire later (docs/design/smart.md F2)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ehrflow_auth.keys import KeyRing
from ehrflow_auth.rotate import plan, rotate, write_private
from ehrflow_devstack.config import generate, write_registry
from ehrflow_runtime.organizations import load_registry

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_plan_publishes_now_signs_later_retires_later() -> None:
    keys = plan(
        [{"file": "k1.pem", "kid": "k1", "alg": "RS384"}],
        new_key={"file": "k2.pem", "kid": "k2", "alg": "RS384"},
        now=NOW,
        publish_for=timedelta(minutes=6),
        retire_after=timedelta(hours=1),
    )
    old, new = keys
    assert new["sign_from"] == (NOW + timedelta(minutes=6)).isoformat()
    assert old["retire_at"] == (NOW + timedelta(minutes=66)).isoformat()


def test_plan_never_extends_an_earlier_retirement() -> None:
    early = (NOW + timedelta(minutes=1)).isoformat()
    [old, _] = plan(
        [{"file": "k1.pem", "kid": "k1", "retire_at": early}],
        new_key={"file": "k2.pem", "kid": "k2"},
        now=NOW,
        publish_for=timedelta(minutes=6),
        retire_after=timedelta(hours=1),
    )
    assert old["retire_at"] == early


@pytest.mark.parametrize("org", ["org1", "org2"])
def test_rotate_edits_the_registry_and_writes_a_key(tmp_path: Path, org: str) -> None:
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://a.example/fhir", "org2": "https://b.example/fhir"})
    kid = rotate(
        config.organizations_file, org, publish_for=timedelta(minutes=6), retire_after=timedelta(hours=1), now=NOW
    )
    record = load_registry(config.organizations_file).get(org)
    assert record is not None
    old, new = record.backend_auth.keys
    assert new.kid == kid and new.file.is_file() and new.alg == old.alg
    ring = KeyRing([record])
    published = lambda at: [k["kid"] for k in ring.public_jwks(org, at)["keys"]]  # noqa: E731
    assert (ring.signing_key(org, NOW).kid, published(NOW)) == (old.kid, [old.kid, kid])
    after = NOW + timedelta(minutes=7)
    assert (ring.signing_key(org, after).kid, published(after)) == (kid, [old.kid, kid])
    retired = NOW + timedelta(hours=2)
    assert (ring.signing_key(org, retired).kid, published(retired)) == (kid, [kid])


def test_the_new_private_key_is_never_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotate CLI wrote the key and only then ran chmod 600: for a moment, under a permissive umask,
    anyone on the host could read it. Now the file is created 0600; no chmod is needed (or allowed)."""
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://a.example/fhir", "org2": "https://b.example/fhir"})

    def no_chmod(self: Path, mode: int) -> None:
        raise AssertionError(f"chmod {oct(mode)} after the key was written")

    monkeypatch.setattr(Path, "chmod", no_chmod)
    previous = os.umask(0)
    try:
        kid = rotate(config.organizations_file, "org1", publish_for=timedelta(0), retire_after=timedelta(1), now=NOW)
    finally:
        os.umask(previous)
    key = config.folder / "keys" / f"{kid}.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):  # never overwrites a key that is already there
        write_private(key, b"x")
