"""Each service's image, assembled as the Dockerfile says and started against the local stack to ``/readyz``.

No container engine runs here, so ``ehrflow_devstack.image`` carries out the Dockerfile's own build steps
on this machine (a clean virtualenv from ``requirements-runtime.lock``, then the service's wheels) and the
test starts the image's ``ENTRYPOINT`` with the image's ``ENV``. It fails when the runtime lock lacks
something a service imports at start-up, when the entry point is wrong, or when a service writes into its
own install (the image's root filesystem is read-only in the Helm chart).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ehrflow_devstack.image import assemble
from ehrflow_devstack.parts import Part
from ehrflow_devstack.processes import free_port
from ehrflow_devstack.stack import Stack, launch_service

# One worker assembles all four, so they share the dependency layer as Docker's cache would.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("images")]

SERVICES = ("auth", "ingest", "inference", "writeback")


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layers")


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_starts_to_readyz(
    service: str, stack: Stack, private_broker: Part, layers: Path, tmp_path: Path
) -> None:
    image = assemble(service, tmp_path / "image", layers=layers)
    assert image.entrypoint == [str(image.root / "opt/venv/bin/ehrflow-service")]
    assert Path(image.entrypoint[0]).resolve().name == f"ehrflow-{service}"
    shipped = image.files()
    # The image's own settings, the stack's Redis, registry and auth service; nothing of this test's
    # environment. A broker of its own, so its consumer groups need not rebalance the stack's.
    env = {**image.env, "PYTHONPATH": "", "VIRTUAL_ENV": "", "PYTHONHOME": ""}
    env["EHRFLOW_KAFKA__BOOTSTRAP_SERVERS"] = private_broker.url
    url = f"http://127.0.0.1:{free_port()}"
    process = launch_service(
        service, url, tmp_path / "service.log", stack.replica_env(service, url, **env), argv=image.entrypoint
    )
    try:
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert process.popen is not None
        cmdline = Path(f"/proc/{process.popen.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode() == str(image.root / "opt/venv/bin/python"), cmdline
    finally:
        process.stop()
    assert image.files() == shipped, "the service wrote into its image"
