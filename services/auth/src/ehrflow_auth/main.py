"""Wires the auth service together. The only place that builds settings, clients and the app."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis
from starlette.applications import Starlette

from ehrflow_auth.app import routes
from ehrflow_auth.cache import TokenCache
from ehrflow_auth.keys import KeyRing
from ehrflow_auth.policy import ServicePolicy
from ehrflow_auth.service import TokenService
from ehrflow_auth.settings import AuthSettings
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.serve import make_http_client, run_asgi
from ehrflow_runtime.telemetry import configure_telemetry


def create_app(settings: AuthSettings) -> Starlette:
    registry = load_registry(settings.organizations_file)
    keys = KeyRing(list(registry))
    policy = ServicePolicy.load(settings.service_policy_file)
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    http = make_http_client()
    cache = TokenCache(redis, read_cache_secret(settings.token_cache_key_file))
    tokens = TokenService(keys, cache, http, attempts=settings.token_request_attempts)

    async def redis_ready() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http.aclose()
            await redis.aclose()

    return Starlette(
        routes=[*routes(registry, tokens, policy, keys.public_jwks), *health_routes({"redis": redis_ready})],
        lifespan=lifespan,
    )


def read_cache_secret(path: Path) -> bytes:
    """32 bytes, given raw or as base64 text (what ``openssl rand -base64 32`` prints)."""
    raw = path.read_bytes()
    if len(raw) == 32:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise ConfigurationError(f"{path}: the token cache key must be 32 bytes (raw or base64)")
    return decoded


def main() -> None:
    settings = AuthSettings()
    configure_logging(settings.log_level)
    configure_telemetry("auth")
    run_asgi(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
