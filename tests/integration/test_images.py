"""Each service's image, assembled as the Dockerfile says and started against the local stack to ``/readyz``.

No container engine runs here, so ``ehrflow_devstack.image`` carries out the Dockerfile's own build steps
on this machine (a clean virtualenv from ``requirements-runtime.lock``, then the service's wheels) and the
test starts the image's ``ENTRYPOINT`` with the image's ``ENV``. It fails when the runtime lock lacks
something a service imports at start-up, when the entry point is wrong, or when a service writes into its
own install (the image's root filesystem is read-only in the Helm chart).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ehrflow_devstack.image import Image, assemble
from ehrflow_devstack.parts import Part
from ehrflow_devstack.processes import Process, free_port
from ehrflow_devstack.stack import Stack, launch_service

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("images")]

SERVICES = ("auth", "ingest", "inference", "writeback")


def _start(stack: Stack, broker: Part, service: str, image: Image, log: Path) -> tuple[Process, str]:
    """The image's entry point with the image's own settings, the stack's Redis, registry and auth service,
    and nothing of this test's environment. A broker of its own, so its consumer groups need not
    rebalance the stack's."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**image.env, "PYTHONPATH": "", "VIRTUAL_ENV": "", "PYTHONHOME": ""}
    env["EHRFLOW_KAFKA__BOOTSTRAP_SERVERS"] = broker.url
    return launch_service(service, url, log, stack.replica_env(service, url, **env), argv=image.entrypoint), url


def test_each_image_starts_to_readyz_and_writes_nothing_into_itself(
    stack: Stack, private_broker: Part, tmp_path: Path
) -> None:
    # One dependency layer for the four (and later runs), as Docker's cache shares it: the first image makes
    # it when it is missing, the other three are assembled on it at once; then the four start at once.
    first, *others = SERVICES
    images = {first: assemble(first, tmp_path / first)}
    with ThreadPoolExecutor(len(others)) as pool:
        images |= dict(zip(others, pool.map(lambda s: assemble(s, tmp_path / s), others), strict=True))
    shipped = {s: image.files() for s, image in images.items()}
    for service, image in images.items():
        assert image.entrypoint == [str(image.root / "opt/venv/bin/ehrflow-service")], service
        assert Path(image.entrypoint[0]).resolve().name == f"ehrflow-{service}"
    with ThreadPoolExecutor(len(SERVICES)) as pool:
        starting = {
            s: pool.submit(_start, stack, private_broker, s, image, tmp_path / f"{s}.log")
            for s, image in images.items()
        }
        started = {s: f.result() for s, f in starting.items() if f.exception() is None}
    try:
        failed = {s: f.exception() for s, f in starting.items() if f.exception() is not None}
        assert not failed, failed
        for service, (process, url) in started.items():
            assert httpx.get(f"{url}/readyz").status_code == 200, service
            assert process.popen is not None
            cmdline = Path(f"/proc/{process.popen.pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[0].decode() == str(images[service].root / "opt/venv/bin/python"), (service, cmdline)
    finally:
        for process, _ in started.values():
            process.stop()
    assert {s: image.files() for s, image in images.items()} == shipped, "a service wrote into its image"
