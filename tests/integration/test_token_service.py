"""The token service on a real Redis with a scripted EHR: credential health, and purging a removed organization."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from ehrflow_auth.cache import TokenCache, organization_pattern
from ehrflow_auth.live import LiveConfig
from ehrflow_auth.service import TokenService
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.errors import ConfigurationError

pytestmark = pytest.mark.integration


class Ehr:
    """Discovery and a token endpoint that can be told to refuse our client."""

    def __init__(self) -> None:
        self.refuse = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(200, json={"token_endpoint": f"{origin}/auth/token"})
        if self.refuse:
            return httpx.Response(401, json={"error": "invalid_client"})
        return httpx.Response(200, json={"access_token": os.urandom(8).hex(), "token_type": "bearer"})


@pytest.fixture()
async def service(stack: Stack, tmp_path: Path) -> AsyncIterator[tuple[TokenService, Ehr, Redis, str]]:
    assert stack.redis
    config = generate(tmp_path)
    suffix = os.urandom(3).hex()
    write_registry(config, {"org1": f"https://one-{suffix}.example/fhir", "org2": f"https://two-{suffix}.example/fhir"})
    text = config.organizations_file.read_text().replace("org1:", f"a{suffix}:").replace("org2:", f"b{suffix}:")
    config.organizations_file.write_text(text)  # organization ids of this test's own
    ehr = Ehr()
    redis = Redis.from_url(stack.redis.url)
    http = httpx.AsyncClient(transport=httpx.MockTransport(ehr.handle))
    yield (
        TokenService(
            LiveConfig(config.organizations_file),
            TokenCache(redis, os.urandom(32)),
            http,
            Auditor(None, source="auth"),
            attempts=1,
        ),
        ehr,
        redis,
        suffix,
    )
    await http.aclose()
    await redis.aclose()


def _health(org: str) -> float | None:
    return REGISTRY.get_sample_value("ehrflow_auth_credential_healthy", {"organization": org})


async def test_a_refused_client_marks_the_credential_unhealthy(service: tuple[TokenService, Ehr, Redis, str]) -> None:
    tokens, ehr, _, suffix = service
    live = tokens._live  # noqa: SLF001 - the registry the service runs with
    org = live.registry.get(f"a{suffix}")
    assert org is not None
    ehr.refuse = True
    with pytest.raises(ConfigurationError):
        await tokens.token(org, "news2")
    assert _health(org.id) == 0
    ehr.refuse = False
    await tokens.token(org, "news2", reject="0" * 64)
    assert _health(org.id) == 1


async def test_a_removed_organization_loses_its_cached_tokens(service: tuple[TokenService, Ehr, Redis, str]) -> None:
    tokens, _, redis, suffix = service
    live = tokens._live  # noqa: SLF001
    kept, removed = live.registry.get(f"a{suffix}"), live.registry.get(f"b{suffix}")
    assert kept is not None and removed is not None
    await tokens.token(kept, "news2")
    await tokens.token(removed, "news2")
    await tokens.registry_changed(removed={removed.id})
    assert [k async for k in redis.scan_iter(match=organization_pattern(removed.id))] == []
    assert [k async for k in redis.scan_iter(match=organization_pattern(kept.id))] != []
