"""The repository stands on its own: nothing in it cites a document or a tracker its reader does not have.

Design facts live in docs/design/ and are cited there ("docs/design/notifications.md item 22"); notes kept
outside the repository, and issue numbers of a tracker, mean nothing to someone reading a clone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(
    r"(?<![\w/])(subscriptions|smart-auth|environment|sandbox-ehr|product|style)\.md"  # notes kept elsewhere
    r"|\b[Ii]ssue \d+|\b[Ii]ssues? #\d+|\.\./shared/"
)
TEXT = (".py", ".md", ".toml", ".yaml", ".yml", ".in", ".txt", ".cfg")


def _tracked() -> list[Path]:
    git = shutil.which("git")
    assert git, "git lists the files the repository holds"
    listed = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return [
        ROOT / name for name in listed.split() if name.endswith(TEXT) or Path(name).name in ("Makefile", "Dockerfile")
    ]


def test_no_file_cites_notes_or_issues_kept_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
        for path in _tracked()
        if path.is_file()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line) and path.name != "test_self_contained.py"
    ]
    assert found == []


def test_the_check_finds_a_citation() -> None:
    assert OUTSIDE.search("see subscriptions.md item 22") and OUTSIDE.search("(issue 4 acceptance)")
    assert not OUTSIDE.search("docs/design/notifications.md item 22")
