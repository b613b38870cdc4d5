"""Trusting CDS clients (CDS Hooks 2.0, "Trusting CDS Clients"): every call carries a JWT signed by the EHR.

Checked in this order, each refusal named: a bearer JWT is present and parses; its algorithm is an
asymmetric one we accept (never ``none`` or HMAC); its ``iss`` is one of the organization's allow-listed CDS
clients (before any outbound request); the signature verifies against that client's configured JWK Set
(its ``jku`` header is not followed); ``exp`` has not passed; ``aud`` names the endpoint being called;
``iat`` and ``jti`` are present; and the ``jti`` was not seen before (kept in Redis until the token
expires, across replicas).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from redis.asyncio import Redis

from ehrflow_runtime.organizations import CdsClient, Organization

ALGORITHMS = ["ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384", "PS256"]
LEEWAY_S = 30
JWKS_TTL_S = 300.0
JTI_PREFIX = "ehrflow:writeback:cds-jti:"


class Untrusted(Exception):
    """Why a CDS call is refused; safe to answer (it names the check, never the token)."""


class CdsTrust:
    def __init__(self, redis: Redis, http_for: Callable[[Organization], httpx.AsyncClient]) -> None:
        self._redis = redis
        self._http_for = http_for
        self._jwks: dict[str, tuple[float, KeySet]] = {}

    async def _keys(self, org: Organization, client: CdsClient, *, fresh: bool = False) -> KeySet:
        cached = self._jwks.get(client.jwks_url)
        if cached is not None and cached[0] > time.monotonic() and not fresh:
            return cached[1]
        try:
            response = await self._http_for(org).get(client.jwks_url, headers={"Accept": "application/json"})
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError):
            raise Untrusted("the CDS client's JWK Set could not be read") from None
        self._jwks[client.jwks_url] = (time.monotonic() + JWKS_TTL_S, keys)
        return keys

    async def verify(self, org: Organization, authorization: str | None, audiences: tuple[str, ...]) -> str:
        """The caller's ``iss``, when the call is trusted; ``Untrusted`` otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Untrusted("a bearer JWT from the EHR's CDS client is required")
        try:
            unverified = jws.extract_compact(token.encode())
            header = unverified.protected
            claims: dict[str, Any] = json.loads(unverified.payload)
        except (JoseError, ValueError):
            raise Untrusted("the JWT does not parse") from None
        if header.get("alg") not in ALGORITHMS:
            raise Untrusted(f"the JWT's algorithm must be one of {', '.join(ALGORITHMS)}")
        if header.get("typ", "JWT") != "JWT":
            raise Untrusted("the JWT's typ must be JWT")
        clients = {c.issuer: c for c in (org.cds_hooks.clients if org.cds_hooks else ())}
        client = clients.get(str(claims.get("iss")))
        if client is None:
            raise Untrusted("the JWT's issuer is not a CDS client of this organization")
        keys = await self._keys(org, client)
        if header.get("kid") and not any(k.kid == header["kid"] for k in keys.keys):
            keys = await self._keys(org, client, fresh=True)  # the client may have rotated its key
        try:
            jwt.decode(token, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError):
            raise Untrusted("the JWT's signature does not verify with the CDS client's keys") from None
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < now - LEEWAY_S:
            raise Untrusted("the JWT has expired")
        audience = claims.get("aud")
        named = audience if isinstance(audience, list) else [audience]
        if not set(named) & set(audiences):
            raise Untrusted("the JWT's aud is not this CDS endpoint")
        if not isinstance(claims.get("iat"), int | float):
            raise Untrusted("the JWT has no iat")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Untrusted("the JWT has no jti")
        key = JTI_PREFIX + hashlib.sha256(f"{org.id}|{client.issuer}|{jti}".encode()).hexdigest()
        if not await self._redis.set(key, "1", nx=True, ex=max(1, int(exp - now + LEEWAY_S))):
            raise Untrusted("the JWT was used before (jti replayed)")
        return client.issuer
