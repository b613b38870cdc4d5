"""Wires the auth service together. The only place that builds settings, clients and the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher import DefaultPublisher
from faststream.specification import AsyncAPI
from starlette.applications import Starlette

from ehrflow_auth.app import routes
from ehrflow_auth.cache import TokenCache
from ehrflow_auth.launch import Launches
from ehrflow_auth.launch_routes import launch_routes
from ehrflow_auth.live import LiveConfig
from ehrflow_auth.policy import ServicePolicy
from ehrflow_auth.service import TokenService
from ehrflow_auth.sessions import SessionStore
from ehrflow_auth.settings import AuthSettings
from ehrflow_contracts import AuditRecorded, topics
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.broker import broker_ready, ensure_topics, make_broker
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.http_errors import exception_handlers
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.redis_client import make_redis
from ehrflow_runtime.sealing import read_key_file
from ehrflow_runtime.serve import make_http_client, run_asgi
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.telemetry import configure_telemetry
from ehrflow_runtime.tls import OrganizationClients


def create_app(settings: AuthSettings) -> Starlette:
    live = LiveConfig(settings.organizations_file)
    policy = ServicePolicy.load(settings.service_policy_file)
    redis = make_redis(settings.redis_url.get_secret_value())
    http = make_http_client()
    cache = TokenCache(redis, read_cache_secret(settings.token_cache_key_file))
    broker = make_broker(settings.kafka, client_id="auth")
    auditor = Auditor(declare(broker), source="auth", confirm_timeout_s=settings.kafka.publish_timeout_s)
    clients = OrganizationClients(http)
    tokens = TokenService(live, cache, http, auditor, attempts=settings.token_request_attempts, clients=clients)
    sessions = SessionStore(redis)
    launches = Launches(
        redis,
        http,
        sessions,
        state_ttl_s=settings.launch_state_ttl_s,
        discovery_ttl_s=settings.launch_discovery_ttl_s,
        clients=clients,
    )

    known = set(live.registry.ids())

    async def registry_changed() -> None:
        nonlocal known
        now = set(live.registry.ids())
        await tokens.registry_changed(removed=known - now)
        known = now

    async def watch_registry() -> None:
        await live.watch(settings.registry_reload_s, on_change=registry_changed)

    async def summarise_counts() -> None:
        while True:
            await asyncio.sleep(settings.audit_summary_s)
            await auditor.flush_summaries(settings.audit_summary_s)

    async def redis_ready() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ensure_topics(settings.kafka, [topics.AUDIT])
        await broker.start()
        background = [asyncio.create_task(watch_registry()), asyncio.create_task(summarise_counts())]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await auditor.flush_summaries(settings.audit_summary_s)
            await broker.stop()
            await clients.aclose()
            await http.aclose()
            await redis.aclose()

    async def broker_ok() -> bool:
        return await broker_ready(broker)

    return Starlette(
        routes=[
            *routes(live, tokens, policy, auditor),
            *launch_routes(live, launches, sessions, policy, auditor),
            *health_routes({"redis": redis_ready, "broker": broker_ok}),
        ],
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers()),
    )


def declare(broker: KafkaBroker) -> DefaultPublisher:
    return broker.publisher(
        topics.AUDIT, schema=AuditRecorded, description="Tokens issued or refused, launches, sessions."
    )


def asyncapi() -> FastStream:
    broker = make_broker(KafkaSettings(bootstrap_servers="kafka:9092"), client_id="auth")
    declare(broker)
    return FastStream(broker, specification=AsyncAPI(broker, title="ehrflow auth", version="1"))


def read_cache_secret(path: Path) -> bytes:
    return read_key_file(path, "token cache key")


def main() -> None:
    settings = AuthSettings()
    configure_logging(settings.log_level)
    configure_telemetry("auth")
    run_asgi(create_app(settings), host=settings.host, port=settings.port, max_concurrency=settings.max_concurrency)


if __name__ == "__main__":
    main()
