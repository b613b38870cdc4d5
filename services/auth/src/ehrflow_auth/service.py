"""Token issuing for callers inside the cluster: cache first, else one upstream request for all replicas."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from prometheus_client import Gauge

from ehrflow_auth.cache import TokenCache, cache_key
from ehrflow_auth.discovery import SmartConfiguration, discover
from ehrflow_auth.keys import Key
from ehrflow_auth.live import LiveConfig
from ehrflow_auth.token_request import IssuedToken, request_token
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.tls import OrganizationClients

KEY_CHECK_INTERVAL_S = 1.0

CREDENTIAL_HEALTHY = Gauge(
    "ehrflow_auth_credential_healthy",
    "1 when the organization's last upstream token request succeeded, 0 when the EHR refused our client",
    ["organization"],
)


@dataclass(frozen=True)
class GrantedToken:
    access_token: str
    expires_at: float
    scope: str


class TokenService:
    def __init__(
        self,
        live: LiveConfig,
        cache: TokenCache,
        http: httpx.AsyncClient,
        auditor: Auditor,
        *,
        attempts: int = 3,
        clients: OrganizationClients | None = None,
    ) -> None:
        self._live = live
        self._auditor = auditor
        self._cache = cache
        self._clients = clients or OrganizationClients(http)
        """Each organization's HTTP client: its own where it has TLS settings (mutual TLS, a CA, pins)."""
        self._attempts = attempts
        self._discovered: dict[str, SmartConfiguration] = {}
        self._discovery_locks: dict[str, asyncio.Lock] = {}
        self._signing_kid: dict[str, str | None] = {}
        self._kid_checked_at: dict[str, float] = {}
        self._cache_keys: dict[tuple[str, str], str] = {}

    async def registry_changed(self, *, removed: set[str]) -> None:
        """After a registry reload: endpoints, scopes and keys may have changed; organizations that are gone
        (disabled) lose their cached tokens at once (docs/design/smart.md E5)."""
        self._discovered.clear()
        self._cache_keys.clear()
        self._kid_checked_at.clear()
        for org_id in sorted(removed):
            purged = await self._cache.purge_organization(org_id)
            await self._auditor.record(
                "organization.removed",
                organization=org_id,
                actor="ehrflow-auth",
                outcome="success",
                details={"tokens_purged": purged},
            )

    async def _purge_if_key_changed(self, org: Organization) -> None:
        """docs/design/smart.md E5: an organization's cached tokens go when its signing key changes.

        Checked at most once a second per organization (keys change at a configured instant)."""
        now = time.monotonic()
        if now - self._kid_checked_at.get(org.id, -1.0) < KEY_CHECK_INTERVAL_S:
            return
        self._kid_checked_at[org.id] = now
        kid = self._live.keys.signing_kid(org.id) if org.backend_auth.method == "private_key_jwt" else None
        previous = self._signing_kid.get(org.id, kid)
        self._signing_kid[org.id] = kid
        if previous != kid:
            purged = await self._cache.purge_organization(org.id)
            await self._auditor.record(
                "key.rotated",
                organization=org.id,
                actor="ehrflow-auth",
                outcome="success",
                details={"previous_kid": previous, "kid": kid, "tokens_purged": purged},
            )

    async def _configuration(self, org: Organization) -> SmartConfiguration:
        """Discovery once per organization: concurrent first requests wait for one another."""
        found = self._discovered.get(org.id)
        if found is not None:
            return found
        async with self._discovery_locks.setdefault(org.id, asyncio.Lock()):
            found = self._discovered.get(org.id)
            if found is None:
                found = self._discovered[org.id] = await discover(self._clients.for_org(org), org)
            return found

    async def token(
        self, org: Organization, feature: str, *, min_ttl: float = 60.0, reject: str | None = None
    ) -> GrantedToken:
        """A token for one enabled feature of ``org`` (the caller checked the feature and its grant)."""
        config = await self._configuration(org)
        await self._purge_if_key_changed(org)
        key = self._cache_keys.get((org.id, feature))
        if key is None:
            key = self._cache_keys[(org.id, feature)] = cache_key(org, feature, config.token_endpoint)

        async def fetch() -> tuple[str, str, int]:
            signing = self._live.keys.signing_key(org.id) if org.backend_auth.method == "private_key_jwt" else None
            try:
                issued = await self._request(org, feature, signing, config)
            except ConfigurationError:
                CREDENTIAL_HEALTHY.labels(org.id).set(0)  # docs/design/smart.md D3: refused client, marked unhealthy
                raise
            CREDENTIAL_HEALTHY.labels(org.id).set(1)
            return issued.access_token, issued.scope, issued.expires_in

        cached = await self._cache.get_or_fetch(key, min_ttl, fetch, reject=reject)
        return GrantedToken(cached.access_token, time.time() + cached.remaining_s, cached.scope)

    async def _request(
        self, org: Organization, feature: str, signing: Key | None, config: SmartConfiguration
    ) -> IssuedToken:
        return await request_token(
            self._clients.for_org(org),
            org,
            signing,
            config.token_endpoint,
            scope=org.scope_for(feature),
            attempts=self._attempts,
            auditor=self._auditor,
        )
