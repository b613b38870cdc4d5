"""Sealing what ehrflow keeps in Redis: AES-256-GCM, with the Redis key as associated data.

Redis holds tokens (auth) and AI drafts with their inputs' references (writeback), which must not sit
there as plaintext. A sealed value names the key it was written under, so a value copied to another key
(another organization's) fails to open instead of being read as that key's.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ehrflow_runtime.errors import ConfigurationError

NONCE_BYTES = 12


def read_key_file(path: Path, what: str) -> bytes:
    """32 bytes from a mounted secret, given raw or as base64 text (what ``openssl rand -base64 32`` prints)."""
    raw = path.read_bytes()
    if len(raw) == 32:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise ConfigurationError(f"{path}: the {what} must be 32 bytes (raw or base64)")
    return decoded


class Sealer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a sealing key must be 32 bytes (AES-256-GCM)")
        self._aead = AESGCM(secret)

    def seal(self, key: str, plain: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, key.encode())

    def open(self, key: str, sealed: bytes) -> bytes | None:
        """The plaintext, or None when ``sealed`` was not sealed under ``key`` with this secret."""
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key.encode())
        except (InvalidTag, ValueError):
            return None
