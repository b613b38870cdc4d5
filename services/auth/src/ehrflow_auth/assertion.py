"""SMART Backend Services client assertions (RFC 7523 private_key_jwt), a fresh one per HTTP attempt."""

from __future__ import annotations

import secrets
import time

from joserfc import jwt

from ehrflow_auth.keys import Key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LIFETIME_S = 240
"""Below the 300 s ceiling EHRs enforce (Epic rejects exp - iat > 300), leaving room for clock skew."""


def new_jti() -> str:
    """256 random bits, 43 characters: unique per assertion and far below Epic's 151-character limit."""
    return secrets.token_urlsafe(32)


def client_assertion(*, client_id: str, audience: str, key: Key, now: float | None = None) -> tuple[str, str]:
    """Return ``(assertion, jti)``. ``aud`` is one exact string (the token endpoint, or a vendor's fixed
    audience), never a list."""
    issued = int(now if now is not None else time.time())
    jti = new_jti()
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti,
        "iat": issued,
        "exp": issued + LIFETIME_S,
    }
    alg = key.alg or "RS384"
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[alg]), jti
