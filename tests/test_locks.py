"""The lock files are locks: complete, consistent with each other, and what the ``.in`` files ask for.

Every install (``make setup``, the images) uses ``pip install --no-deps``, so nothing is resolved at
install time and a release published later cannot change what gets installed. That is only safe if
each lock holds every package its installs need; ``make setup`` runs ``pip check`` on the development
environment, and these tests do the same for the runtime lock the images install, without installing it.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
LOCAL = {"ehrflow-contracts", "ehrflow-runtime", "ehrflow-auth", "ehrflow-ingest", "ehrflow-inference"}
LOCAL |= {"ehrflow-writeback", "ehrflow-devstack"}
SERVICES = ("auth", "ingest", "inference", "writeback")


def _lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{package: (version, hashes)}`` of a requirements-style lock file."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), frozenset())
        for h in HASH.findall(line):
            version, hashes = pins[current]
            pins[current] = (version, hashes | {h})
    return pins


def _pyproject_requirements(folder: str) -> list[Requirement]:
    data = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def _closure(roots: list[Requirement], lock: dict[str, tuple[str, frozenset[str]]]) -> list[str]:
    """Walk ``roots`` through the installed packages' metadata (the development environment holds the
    same versions, checked below) and return every requirement the lock does not satisfy."""
    env = default_environment() | {"sys_platform": "linux", "platform_system": "Linux"}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, "a service") for r in roots]
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        if name in LOCAL:
            continue
        if name not in lock:
            missing.append(f"{req} (wanted by {wanted_by})")
            continue
        version = lock[name][0]
        if not req.specifier.contains(version, prereleases=True):
            missing.append(f"{req} (wanted by {wanted_by}), the lock has {version}")
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        for sub in metadata.requires(name) or []:
            sub_req = Requirement(sub)
            applies = sub_req.marker is None or any(
                sub_req.marker.evaluate(env | {"extra": extra}) for extra in (req.extras or {""})
            )
            if applies:
                todo.append((sub_req, f"{name}=={version}"))
    return missing


def test_images_install_what_the_tests_ran() -> None:
    dev = _lock("requirements.lock")
    for lock in ("requirements-runtime.lock", "requirements-build.lock"):
        differ = {name: pin for name, pin in _lock(lock).items() if dev.get(name) != pin}
        assert not differ, f"{lock} pins these differently from requirements.lock: {sorted(differ)}"


def test_the_development_environment_is_the_lock() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: (version, installed.get(name))
        for name, (version, _) in _lock("requirements.lock").items()
        if installed.get(name) != version
    }
    assert not differ, f"installed versions differ from requirements.lock (run `make setup`): {differ}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_lock_is_complete_for_each_image(service: str) -> None:
    roots = [
        r
        for folder in ("libs/contracts", "libs/runtime", f"services/{service}")
        for r in _pyproject_requirements(folder)
    ]
    assert _closure(roots, _lock("requirements-runtime.lock")) == []


def test_a_missing_package_is_found() -> None:
    """The check above can fail: take one package a service needs out of the lock."""
    lock = _lock("requirements-runtime.lock")
    del lock["h11"]
    missing = _closure(_pyproject_requirements("libs/runtime"), lock)
    assert any(m.startswith("h11") for m in missing), missing


@pytest.mark.parametrize(
    ("source", "lock"),
    [
        ("requirements.in", "requirements.lock"),
        ("requirements-runtime.in", "requirements-runtime.lock"),
        ("requirements-build.in", "requirements-build.lock"),
        ("requirements-scan.in", "requirements-scan.lock"),
    ],
)
def test_every_pin_asked_for_is_locked(source: str, lock: str) -> None:
    pins = _lock(lock)
    asked = {
        canonicalize_name(m.group(1)): m.group(2)
        for line in (ROOT / source).read_text().splitlines()
        if (m := PIN.match(line.strip()))
    }
    assert {name: pins.get(name, ("missing",))[0] for name in asked} == asked
    assert all(hashes for _, hashes in pins.values()), f"{lock} has a pin without a hash"
