"""A service's image, assembled on this machine the way the Dockerfile assembles it, without a container engine.

The repository's one ``Dockerfile`` is read and its build stage is carried out here: ``ARG``, ``WORKDIR``,
``COPY`` and ``RUN`` in order, each absolute path the Dockerfile names (``/opt/venv``, ``/wheels``, ``/src``)
moved under a scratch folder standing for the image's root. ``RUN`` lines run as written, with ``python``
being this machine's base interpreter (the same minor version as the image's). The final stage's ``ENV``
and ``ENTRYPOINT`` are returned, so a test can start the service as the image would. Because the
steps are the Dockerfile's own lines, a change to the recipe is what gets tested; a step this reader does
not know stops it rather than being skipped.

Like Docker's layer cache, the build stage's steps before ``ARG SERVICE`` (the dependency layer) are done
once per content (their lines, the files they copy and the interpreter) and kept in
``~/.cache/ehrflow/image-layers``, shared by hard links between the services and the runs that assemble
the same layer: only the first run on a machine, or the first after a lock changes, pays for it. The
virtualenvs are used through ``python -m pip``, which finds its environment from where its ``python``
sits, so a linked copy is a working one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ehrflow_devstack.browser import cache_dir

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
ABSOLUTE = re.compile(r"(?<![\w./$-])/(opt|wheels|src)(?=[/\s\"']|$)")
"""The image paths the Dockerfile uses, as they appear in its lines."""
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Image:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)

    def files(self) -> set[str]:
        """Every path under the image's ``/opt`` (what the image ships), relative to the root."""
        return {str(p.relative_to(self.root)) for p in (self.root / "opt").rglob("*")}


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments dropped, continuation lines joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # a comment inside a continued line is dropped too
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    out = []
    for line in joined:
        name, _, args = line.partition(" ")
        out.append((name.upper(), args.strip()))
    return out


def _expand(text: str, args: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _python_dir(layers: Path) -> Path:
    """A folder whose ``python`` is this machine's base interpreter (not the development virtualenv). It
    lives beside the layers and is never moved: the virtualenvs made in a layer link to it."""
    base = getattr(sys, "_base_executable", sys.executable)
    folder = layers / f"host-bin-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "python"
    if not link.is_symlink():
        link.symlink_to(base)
    return folder


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"assembling an image needs `{name}`")
    return found


def _layer_key(steps: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name, raw in steps:
        digest.update(f"{name} {raw}\n".encode())
        if name == "COPY":
            for source in shlex.split(raw)[:-1]:
                for path in sorted((ROOT / source).rglob("*")) if (ROOT / source).is_dir() else [ROOT / source]:
                    digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:16]


def assemble(service: str, scratch: Path, *, layers: Path | None = None, dockerfile: Path = DOCKERFILE) -> Image:
    """Carry out ``dockerfile`` for ``--build-arg SERVICE=service`` with the image's root at ``scratch/root``;
    the dependency layer comes from ``layers`` when it holds one for the same steps."""
    steps = instructions(dockerfile.read_text())
    shared = next(i for i, (name, raw) in enumerate(steps) if name == "ARG" and raw == "SERVICE")
    layers = layers or cache_dir() / "image-layers"
    layer = _dependency_layer(steps[:shared], layers)
    root = scratch / "root"
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run([_tool("cp"), "-al", str(layer), str(root)], check=True)  # hard links: no copy
    return _carry_out(steps, service, scratch, root, python=_python_dir(layers), skip=shared)


def _dependency_layer(steps: list[tuple[str, str]], layers: Path) -> Path:
    """The root holding ``steps`` done, from ``layers`` or made there (in a folder of its own, renamed into
    place when complete, so an interrupted or concurrent build never leaves half a layer)."""
    key = _layer_key(steps)
    layer = layers / key / "root"
    if layer.exists():
        return layer
    layers.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=layers, prefix=f".{key}-"))
    _carry_out(steps, "", building, building / "root", python=_python_dir(layers))
    try:
        building.rename(layers / key)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(building)
    return layer


def _carry_out(
    steps: list[tuple[str, str]], service: str, scratch: Path, root: Path, *, python: Path, skip: int = 0
) -> Image:
    """Do ``steps`` with the image's root at ``root`` and ``python`` first on the path; the first ``skip``
    only set the stage and folder."""
    root.mkdir(parents=True, exist_ok=True)
    image = Image(root)
    args: dict[str, str] = {}
    stage = 0
    cwd = root
    path = f"{python}:/usr/bin:/bin"

    def here(text: str) -> str:
        return ABSOLUTE.sub(lambda m: f"{root}/{m.group(1)}", text)

    for index, (name, raw) in enumerate(steps):
        done = index < skip
        if name == "ARG":
            key, _, default = raw.partition("=")
            args[key] = service if key == "SERVICE" else args.get(key, default)
        elif name == "FROM":
            stage += 1
        elif name in ("LABEL", "USER", "EXPOSE"):  # metadata; tests/test_dockerfile.py checks the user
            continue
        elif name == "WORKDIR":
            cwd = Path(here(_expand(raw, args)))
            cwd.mkdir(parents=True, exist_ok=True)
        elif name == "COPY" and stage == 1:
            if not done:
                _copy(shlex.split(_expand(raw, args)), cwd, here)
        elif name == "COPY":  # the final stage takes the build stage's files: the same root here
            if not raw.startswith("--from=build "):
                raise ValueError(f"this reader knows COPY --from=build only in the final stage: {raw}")
        elif name == "RUN" and stage == 1:
            if not done:
                env = {"PATH": path, "HOME": str(scratch), "SERVICE": service, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
                env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_INDEX") or k == "PIP_FIND_LINKS"}
                subprocess.run([_tool("bash"), "-euc", here(_expand(raw, args))], cwd=cwd, env=env, check=True)
        elif name == "ENV" and stage == 2:
            for assignment in shlex.split(raw):
                key, _, value = assignment.partition("=")
                image.env[key] = here(_expand(value, {**image.env, "PATH": path}))
        elif name == "ENTRYPOINT" and stage == 2:
            image.entrypoint = [here(part) for part in shlex.split(raw.strip("[]").replace(",", " "))]
        else:
            raise ValueError(f"this reader does not know `{name}` in stage {stage}: {raw}")
    return image


def _copy(parts: list[str], cwd: Path, here: Callable[[str], str]) -> None:
    *sources, target = parts
    into = Path(here(target)) if target.startswith("/") else cwd / target
    for source in sources:
        if (ROOT / source).is_dir():
            ignore = shutil.ignore_patterns("tests", "__pycache__", "*.egg-info")
            shutil.copytree(ROOT / source, into, dirs_exist_ok=True, ignore=ignore)
        else:
            into.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, into / Path(source).name)
