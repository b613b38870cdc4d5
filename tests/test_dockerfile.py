"""The one Dockerfile: hadolint clean, its base pinned by digest, a numeric non-root user.

(That each service's image starts is ``tests/integration/test_images.py``.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ehrflow_devstack.image import DOCKERFILE, instructions

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_the_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True)  # noqa: S603 (the lock's hadolint)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_faults(tmp_path: Path) -> None:
    """The check above can fail: an unpinned base and a root user are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install httpx\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True)  # noqa: S603 (the lock's hadolint)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3002" in result.stdout


def test_the_base_image_is_pinned_by_digest_and_the_user_is_numeric() -> None:
    steps = instructions(DOCKERFILE.read_text())
    base = next(raw for name, raw in steps if name == "ARG" and raw.startswith("PYTHON_IMAGE="))
    assert "@sha256:" in base and len(base.rsplit(":", 1)[1]) == 64
    assert [raw for name, raw in steps if name == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert [raw for name, raw in steps if name == "USER"] == ["10001:10001"]


def test_there_is_one_recipe() -> None:
    root = DOCKERFILE.parent
    assert sorted(str(p.relative_to(root)) for p in root.glob("services/*/Dockerfile")) == []
