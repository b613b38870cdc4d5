"""The real browser the review screen is tested in: Debian's Chromium driven by Playwright, and axe-core.

``python -m ehrflow_devstack.browser`` (run by ``make setup``) makes both available:

- **Chromium** from Debian's package (``/usr/bin/chromium``, or ``EHRFLOW_CHROMIUM``). Playwright's own browser
  download is not used: it needs hosts a locked-down machine cannot reach, and Debian's build is what the
  machine keeps patched. When it is missing, the set-up installs the package if it may (root, apt-get),
  and otherwise says exactly what to run.
- **axe-core** from the npm registry, at a pinned version whose tarball is checked against the registry's
  SHA-512 integrity before ``axe.min.js`` is taken out of it; cached outside the clone.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
CHROMIUM_FLAGS = [
    # What a headless Chromium needs on a closed network and as root: no sandbox (root), no GPU, and none
    # of the background connections to Google's hosts that a closed network refuses.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = "apt-get install -y --no-install-recommends chromium"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ehrflow"


def chromium_path() -> Path:
    return Path(os.environ.get("EHRFLOW_CHROMIUM", "/usr/bin/chromium"))


def axe_path() -> Path:
    return cache_dir() / f"axe-core-{AXE_VERSION}" / "axe.min.js"


def _integrity_ok(data: bytes) -> bool:
    algorithm, _, expected = AXE_INTEGRITY.partition("-")
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected


def ensure_axe() -> Path:
    target = axe_path()
    if target.exists():
        return target
    with urllib.request.urlopen(AXE_TARBALL, timeout=60) as response:  # noqa: S310 (a fixed https URL)
        data = response.read()
    if not _integrity_ok(data):
        raise SystemExit(f"axe-core {AXE_VERSION}: the tarball does not match its pinned integrity; not used")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile("package/axe.min.js")
        if member is None:
            raise SystemExit(f"axe-core {AXE_VERSION}: no package/axe.min.js in the tarball")
        script = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(script)
    partial.replace(target)
    return target


def ensure_chromium() -> Path:
    path = chromium_path()
    if path.exists():
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing Debian's Chromium: {INSTALL}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(INSTALL.split(), check=True, env=env, stdout=subprocess.DEVNULL)
        if path.exists():
            return path
    raise SystemExit(
        f"Chromium is not at {path}. Install Debian's package (sudo {INSTALL}), or point EHRFLOW_CHROMIUM at a "
        "Chromium binary; the review screen's browser tests need it."
    )


def main() -> None:
    chromium = ensure_chromium()
    axe = ensure_axe()
    print(f"browser tests: {chromium}, axe-core {AXE_VERSION} at {axe}")


if __name__ == "__main__":
    main()
