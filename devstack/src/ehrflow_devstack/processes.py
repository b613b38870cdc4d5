"""Child processes with one log file each, started in order and stopped exactly as started."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; macOS uses 49152-65535, above it too


_HANDED_OUT: set[int] = set()
"""Ports this process chose already. The stack picks the services' ports before it starts the EHRs
(the EHRs must know auth's JWKS URL), so a port chosen and not yet bound must never be chosen again."""


def _port_range() -> tuple[int, int]:
    """Ports below the ephemeral range, split between pytest-xdist workers: each worker is a process of its
    own, so one could choose a port another chose and has not bound yet (a stack picks many before its
    processes start). With a share each, they never meet."""
    first, last = 10_000, min(_ephemeral_range()[0], 49152) - 1
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker.startswith("gw") and count > 1:
        share = (last - first + 1) // count
        first += int(worker[2:]) * share
        last = first + share - 1
    return first, last


def free_port() -> int:
    """A free loopback port *outside* the kernel's ephemeral range, never the same one twice.

    ``bind(0)`` hands out ports from the range outgoing connections use too, so between choosing a port and
    a child process binding it, any client connection (Kafka, Redis, HTTP) may take it. Below the range
    only listeners compete, and each candidate is checked.
    """
    first, last = _port_range()
    for _ in range(500):
        port = random.randint(first, last)  # noqa: S311 - choosing a port, not a secret
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise StartupError("no free port below the ephemeral range")


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class StartupError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True
    popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise StartupError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise StartupError(f"{self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        if not self.popen or self.popen.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
