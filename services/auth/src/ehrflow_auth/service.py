"""Token issuing for callers inside the cluster: cache first, else one upstream request for all replicas."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from ehrflow_auth.cache import TokenCache, cache_key
from ehrflow_auth.discovery import SmartConfiguration, discover
from ehrflow_auth.keys import KeyRing
from ehrflow_auth.token_request import request_token
from ehrflow_runtime.organizations import Organization, Registry
from ehrflow_runtime.settings import read_secret_file


@dataclass(frozen=True)
class GrantedToken:
    access_token: str
    expires_at: float
    scope: str


class ServiceCredentials:
    """The credentials of services allowed to call the internal API, one file per service."""

    def __init__(self, folder: Path) -> None:
        self._secrets: dict[str, SecretStr] = {
            p.name: read_secret_file(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
        }

    def verify(self, service: str | None, presented: str | None) -> bool:
        expected = self._secrets.get(service or "")
        # compare_digest on bytes: constant time for equal lengths, and no early exit on the content.
        candidate = (presented or "").encode()
        reference = expected.get_secret_value().encode() if expected else b"\x00" * max(1, len(candidate))
        return hmac.compare_digest(candidate, reference) and expected is not None


class TokenService:
    def __init__(
        self, registry: Registry, keys: KeyRing, cache: TokenCache, http: httpx.AsyncClient, *, attempts: int = 3
    ) -> None:
        self._registry = registry
        self._keys = keys
        self._cache = cache
        self._http = http
        self._attempts = attempts
        self._discovered: dict[str, SmartConfiguration] = {}

    async def _configuration(self, org: Organization) -> SmartConfiguration:
        found = self._discovered.get(org.id)
        if found is None:
            found = self._discovered[org.id] = await discover(self._http, org)
        return found

    async def token(self, org: Organization, *, min_ttl: float = 60.0, reject: str | None = None) -> GrantedToken:
        config = await self._configuration(org)
        key = cache_key(org, config.token_endpoint)

        async def fetch() -> tuple[str, str, int]:
            issued = await request_token(
                self._http, org, self._keys.signing_key(org.id), config.token_endpoint, attempts=self._attempts
            )
            return issued.access_token, issued.scope, issued.expires_in

        cached = await self._cache.get_or_fetch(key, min_ttl, fetch, reject=reject)
        return GrantedToken(cached.access_token, time.time() + cached.remaining_s, cached.scope)
