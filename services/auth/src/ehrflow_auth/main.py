"""Wires the auth service together. The only place that builds settings, clients and the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette

from ehrflow_auth.app import routes
from ehrflow_auth.cache import TokenCache
from ehrflow_auth.keys import KeyRing
from ehrflow_auth.service import ServiceCredentials, TokenService
from ehrflow_auth.settings import AuthSettings
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.serve import make_http_client, run_asgi
from ehrflow_runtime.telemetry import configure_telemetry


def create_app(settings: AuthSettings) -> Starlette:
    registry = load_registry(settings.organizations_file)
    keys = KeyRing(list(registry))
    credentials = ServiceCredentials(settings.service_credentials_dir)
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    http = make_http_client()
    tokens = TokenService(registry, keys, TokenCache(redis), http, attempts=settings.token_request_attempts)

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
        routes=[*routes(registry, tokens, credentials, keys.public_jwks), *health_routes({"redis": redis_ready})],
        lifespan=lifespan,
    )


def main() -> None:
    settings = AuthSettings()
    configure_logging(settings.log_level)
    configure_telemetry("auth")
    run_asgi(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
