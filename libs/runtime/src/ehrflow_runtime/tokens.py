"""Client of the auth service's internal token API: the only way other services obtain EHR tokens."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.settings import AuthClientSettings, read_secret_file

TOKEN_PATH = "/internal/v1/tokens"  # noqa: S105 - a URL path, not a secret


@dataclass(frozen=True)
class AccessToken:
    value: SecretStr
    expires_at: float
    scope: str

    def fresh_for(self, seconds: float) -> bool:
        return self.expires_at - time.time() > seconds


class TokenClient:
    """Gets an organization's access token from the auth service; keeps it in memory until near expiry."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, service_name: str, credential: SecretStr) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + TOKEN_PATH
        self._service = service_name
        self._credential = credential
        self._cache: dict[tuple[str, str], AccessToken] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._rejected: dict[tuple[str, str], str] = {}

    @classmethod
    def configured(cls, http: httpx.AsyncClient, settings: AuthClientSettings) -> TokenClient:
        """The client a service's ``auth`` settings describe (its credential read from the mounted file)."""
        return cls(
            http,
            base_url=settings.url,
            service_name=settings.service_name,
            credential=read_secret_file(settings.credential_file),
        )

    async def token(self, organization_id: str, feature: str, *, min_ttl: float = 60.0) -> AccessToken:
        """A token for one feature of one organization (auth checks that this service may have it)."""
        slot = (organization_id, feature)
        cached = self._cache.get(slot)
        if cached and cached.fresh_for(min_ttl):
            return cached
        async with self._locks.setdefault(slot, asyncio.Lock()):
            cached = self._cache.get(slot)
            if cached and cached.fresh_for(min_ttl):
                return cached
            token = await self._fetch(organization_id, feature, min_ttl, reject=self._rejected.get(slot))
            self._rejected.pop(slot, None)
            self._cache[slot] = token
            return token

    def invalidate(self, organization_id: str, feature: str) -> None:
        """The EHR refused this token: forget it, and tell auth not to serve it again."""
        refused = self._cache.pop((organization_id, feature), None)
        if refused is not None:
            digest = hashlib.sha256(refused.value.get_secret_value().encode()).hexdigest()
            self._rejected[(organization_id, feature)] = digest

    async def _fetch(self, organization_id: str, feature: str, min_ttl: float, *, reject: str | None) -> AccessToken:
        try:
            response = await self._http.post(
                self._url,
                json={
                    "organization": organization_id,
                    "feature": feature,
                    "min_ttl": min_ttl,
                    "rejected_token_sha256": reject,
                },
                headers={
                    "Authorization": f"Bearer {self._credential.get_secret_value()}",
                    "X-Ehrflow-Service": self._service,
                },
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"auth service unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"auth service answered {response.status_code} for {organization_id}")
        if response.status_code != 200:
            raise UpstreamRejected(
                f"auth service refused a token for {organization_id}: {response.status_code}",
                status=response.status_code,
            )
        body = response.json()
        return AccessToken(SecretStr(body["access_token"]), float(body["expires_at"]), body.get("scope", ""))
