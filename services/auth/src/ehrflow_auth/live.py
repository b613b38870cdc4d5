"""The registry and keys the auth service runs with, reloaded when the registry or a key file changes.

Kubernetes updates a mounted ConfigMap in place; a rotation (``ehrflow-auth-rotate-key``) edits the
file. A file that fails to load keeps the last good configuration and is logged (``ehrflow_runtime.live``).
"""

from __future__ import annotations

from pathlib import Path

from ehrflow_auth.keys import KeyRing
from ehrflow_runtime.live import Live


class LiveConfig(Live[KeyRing]):
    def __init__(self, path: Path) -> None:
        super().__init__(path, lambda registry: KeyRing(list(registry)))

    @property
    def keys(self) -> KeyRing:
        return self.current
