"""The registry and keys the auth service runs with, reloaded when the registry file changes.

Kubernetes updates a mounted ConfigMap in place; a rotation (``ehrflow-auth-rotate-key``) edits the
file. A file that fails to load keeps the last good configuration and is logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ehrflow_auth.keys import KeyRing
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Registry, load_registry

log = logging.getLogger("ehrflow.auth")


class LiveConfig:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = path.stat().st_mtime_ns
        self.registry: Registry = load_registry(path)
        self.keys = KeyRing(list(self.registry))

    def reload_if_changed(self) -> bool:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            registry = load_registry(self.path)
            keys = KeyRing(list(registry))
        except ConfigurationError as exc:
            log.error("registry reload failed; keeping the last good one", extra={"reason": str(exc)})
            return False
        self.registry, self.keys = registry, keys
        log.info("registry reloaded", extra={"organizations": len(registry)})
        return True
