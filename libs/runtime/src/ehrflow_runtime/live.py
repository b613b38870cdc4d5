"""The organization registry, and what a service builds from it, kept current without a restart.

Revoking a webhook secret or a review key, or removing an organization, must take effect in every
service while it runs. ``Live`` holds the registry and a service's view of it (secrets read, clients
made: whatever ``build`` returns) and rebuilds both when the registry file or any file it names (secret
files, keys) changes, checked every ``every_s`` and at once on ``SIGHUP``. Files are compared by
content, not modification time: Kubernetes updates mounted ConfigMaps and Secrets by swapping a symlink,
and a file rewritten within the same second keeps its mtime on some filesystems. A registry or file
that fails to load or build keeps the last good view, and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from ehrflow_runtime.organizations import Registry, load_registry

log = logging.getLogger("ehrflow.config")

T = TypeVar("T")

RELOADS = Counter("ehrflow_config_reloads", "Configuration reloads after a change, by outcome.", ["outcome"])
ORGANIZATIONS = Gauge("ehrflow_config_organizations", "Organizations in the configuration in use.")


def files_of(registry: Registry) -> list[Path]:
    """Every file the registry names (secret files, keys), in a stable order."""
    found: set[Path] = set()
    for org in registry:
        found.update(_paths(org))
    return sorted(found)


def _paths(value: Any) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _paths(getattr(value, name))
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths(item)


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()


class Live(Generic[T]):
    """The registry at ``path`` and ``build(registry)``, rebuilt when any file they came from changes."""

    def __init__(self, path: Path, build: Callable[[Registry], T], *, credentials: bool = True) -> None:
        """``credentials=False`` for every service but auth: the EHR credential files need not be mounted."""
        self.path = path
        self._build = build
        self._credentials = credentials
        self.registry = load_registry(path, credentials=credentials)
        self.current: T = build(self.registry)
        self._stamp = _fingerprint([path, *files_of(self.registry)])
        self._hangup = asyncio.Event()
        ORGANIZATIONS.set(len(self.registry))

    def reload_if_changed(self) -> bool:
        """Rebuild if the registry or a file it names changed; True when a new view is in place."""
        stamp = _fingerprint([self.path, *files_of(self.registry)])
        if stamp == self._stamp:
            return False
        try:
            registry = load_registry(self.path, credentials=self._credentials)
            current = self._build(registry)
        except Exception as exc:  # a half-written file, a missing secret: keep serving with the last good one
            log.error(
                "configuration reload failed; keeping the last good one",
                extra={"file": str(self.path), "reason": str(exc) or type(exc).__name__},
            )
            self._stamp = stamp  # not again until something changes once more
            RELOADS.labels("failed").inc()
            return False
        self.registry, self.current = registry, current
        self._stamp = _fingerprint([self.path, *files_of(registry)])
        RELOADS.labels("success").inc()
        ORGANIZATIONS.set(len(registry))
        log.info("configuration reloaded", extra={"organizations": len(registry)})
        return True

    def hang_up(self) -> None:
        """Check now (``SIGHUP``)."""
        self._hangup.set()

    async def watch(self, every_s: float, on_change: Callable[[], Any] | None = None) -> None:
        """Check every ``every_s`` seconds, and at once on ``SIGHUP``, until cancelled."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
            loop.add_signal_handler(signal.SIGHUP, self.hang_up)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hangup.wait(), every_s)
                self._hangup.clear()
                if self.reload_if_changed() and on_change is not None:
                    result = on_change()
                    if asyncio.iscoroutine(result):
                        await result
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
