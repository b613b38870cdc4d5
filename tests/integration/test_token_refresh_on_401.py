"""docs/design/smart.md E5: an EHR 401 with a cached token gets one fresh token and one retry, on real parts."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from ehrflow_auth.cache import LOCAL_MAX_AGE_S, TokenCache, cache_key
from ehrflow_auth.main import read_cache_secret
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.settings import read_secret_file
from ehrflow_runtime.tokens import TokenClient

pytestmark = pytest.mark.integration


async def test_refused_cached_token_is_replaced_once(stack: Stack) -> None:
    assert stack.config and stack.redis
    org = load_registry(stack.config.organizations_file).get("org2")
    assert org is not None
    token_endpoint = stack.ehrs["org2"].url.removesuffix("/fhir") + "/auth/token"
    redis = Redis.from_url(stack.redis.url)
    key = cache_key(org, "news2", token_endpoint)
    cache = TokenCache(redis, read_cache_secret(stack.config.cache_key_file))
    # The shared cache holds a token the EHR will refuse (as after an EHR restart or a revoked grant).
    await cache.put(key, "refused-by-the-ehr", "system/*.read", 300)
    await asyncio.sleep(LOCAL_MAX_AGE_S + 0.5)  # auth's replicas re-read Redis after this long
    async with httpx.AsyncClient(timeout=20) as http:
        tokens = TokenClient(
            http,
            base_url=stack.urls["auth"],
            service_name="inference",
            credential=read_secret_file(stack.config.credentials_dir / "inference"),
        )
        fhir = FhirClient(http, tokens, org, "news2")
        bundle = await fhir.search("Patient", {"_count": "1"})
    assert isinstance(bundle, list)
    fresh = TokenCache(redis, read_cache_secret(stack.config.cache_key_file))  # no memory of its own: Redis
    replaced = await fresh.get(key, 0)
    await redis.aclose()
    assert replaced is not None and replaced.access_token != "refused-by-the-ehr"
