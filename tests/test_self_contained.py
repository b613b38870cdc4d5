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
NOTES = ("subscriptions", "smart-auth", "environment", "sandbox-ehr", "product", "style")
"""Design notes the team keeps outside the repository, by file name."""
OUTSIDE = re.compile(
    rf"(?<![\w/])({'|'.join(NOTES)})\.md"  # a note kept elsewhere
    r"|\b[Ii]ssue \d+|\b[Ii]ssues? #\d+|\.\./shared/"  # a tracker's number, the notes' folder
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
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_check_finds_a_citation() -> None:
    """Citations are made up here from their parts, so that this file holds none itself."""
    assert all(OUTSIDE.search(f"see {note}.md item 22") for note in NOTES)
    assert OUTSIDE.search(f"({'issue'} {4} acceptance)")
    assert not OUTSIDE.search("docs/design/notifications.md item 22")
