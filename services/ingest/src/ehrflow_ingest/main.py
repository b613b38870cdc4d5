"""Wires the ingest service together. The only place that builds settings, broker and the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import ip_network

from faststream import FastStream
from faststream.specification import AsyncAPI
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ehrflow_contracts import topics
from ehrflow_ingest.app import Configured, IngestApp, IngestContext, Webhook, routes
from ehrflow_ingest.channels import declare
from ehrflow_ingest.dedupe import Dedupe
from ehrflow_ingest.manager import SubscriptionManager
from ehrflow_ingest.openapi import document
from ehrflow_ingest.recording import Recorder
from ehrflow_ingest.recovery import FEATURE, Recovery
from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_ingest.settings import IngestSettings
from ehrflow_ingest.sink import KafkaSink, Sink
from ehrflow_ingest.tracker import Tracker
from ehrflow_ingest.tracking_store import TrackingStore
from ehrflow_ingest.worker import Worker
from ehrflow_runtime.broker import ensure_topics, make_broker
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.http_errors import exception_handlers
from ehrflow_runtime.live import Live
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.redis_client import make_redis
from ehrflow_runtime.serve import make_http_client, run_asgi
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.telemetry import configure_telemetry
from ehrflow_runtime.tls import OrganizationClients
from ehrflow_runtime.tokens import TokenClient

log = logging.getLogger("ehrflow.ingest")


def create_app(settings: IngestSettings, sink: Sink | None = None) -> Starlette:
    """The ingest app; ``sink`` replaces Kafka in unit tests (``ehrflow_devstack.memory_sink``)."""
    kafka = KafkaSink(settings.kafka, client_id="ingest") if sink is None else None
    sink = sink or kafka
    assert sink is not None
    redis = make_redis(settings.redis_url.get_secret_value())
    dedupe = Dedupe(redis)
    recorder = Recorder(sink, dedupe, settings.kafka.publish_timeout_s)
    store = TrackingStore(redis)
    tracker = Tracker(store)
    http = make_http_client(settings.auth.timeout_s if settings.auth else 10.0)
    tokens = TokenClient.configured(http, settings.auth) if settings.auth else None
    clients = OrganizationClients(http, timeout_s=settings.auth.timeout_s if settings.auth else 10.0)

    def configured(registry: Registry) -> Configured:
        """What depends on the registry: rebuilt when it or a secret file changes (a revoked webhook
        secret, a removed organization take effect without a restart)."""
        fhir = {org.id: FhirClient(clients.for_org(org), tokens, org, FEATURE) for org in registry} if tokens else {}
        return Configured(registry, SenderSecrets(list(registry)), fhir)

    live = Live(settings.organizations_file, configured, credentials=False)
    ctx = IngestContext(
        live=live,
        recorder=recorder,
        max_body_bytes=settings.max_body_bytes,
        quarantine_max_bytes=settings.quarantine_max_bytes,
        max_events=settings.max_events_per_notification,
        body_timeout_s=settings.body_timeout_s,
        trusted_proxies=tuple(ip_network(n) for n in settings.trusted_proxies),
        tracker=tracker,
    )
    worker = _worker(settings, live, redis, store, recorder, sink.ready)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if kafka is not None:
            await ensure_topics(settings.kafka, topics.ALL)
            await kafka.start()
        background = [asyncio.create_task(live.watch(settings.registry_reload_s))]
        if worker is not None:
            background.append(asyncio.create_task(worker.run()))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await recorder.flush()
            await dedupe.aclose()
            await tracker.flush()
            if kafka is not None:
                await kafka.stop()
            await clients.aclose()
            await http.aclose()
            await redis.aclose()

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(document())

    webhook = Webhook(ctx)
    return IngestApp(
        webhook,
        routes=[
            *routes(webhook),
            *health_routes({"broker": sink.ready}, optional={"redis": redis_ok}),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers()),
    )


def _worker(
    settings: IngestSettings,
    live: Live[Configured],
    redis: Redis,
    store: TrackingStore,
    recorder: Recorder,
    ready: Callable[[], Awaitable[bool]],
) -> Worker | None:
    """The background loop, when configured: recovery needs the auth service, the manager a public URL."""
    if not settings.background:
        return None
    recovery, manager = None, None

    def fhir_for(org_id: str) -> FhirClient:
        return live.current.clients[org_id]

    if settings.auth is None:
        log.warning("no auth service configured: gaps and silences are reported, never recovered")
    else:
        recovery = Recovery(fhir_for, recorder, overlap_s=settings.recovery_overlap_s)
        if settings.public_url:
            manager = SubscriptionManager(fhir_for, store, public_url=settings.public_url)
    if manager is None and any(org.ingest.subscriptions for org in live.registry):
        log.warning("subscriptions are declared but not managed: set EHRFLOW_PUBLIC_URL and EHRFLOW_AUTH__*")
    return Worker(
        lambda: live.registry,
        redis,
        store,
        recovery,
        manager,
        tick_s=settings.tick_s,
        manage_every_s=settings.manage_every_s,
        grace_s=settings.gap_grace_s,
        ready=ready,
    )


def asyncapi() -> FastStream:
    """The service's AsyncAPI description (``make asyncapi`` writes it to docs/asyncapi/)."""
    broker = make_broker(KafkaSettings(bootstrap_servers="kafka:9092"), client_id="ingest")
    declare(broker)
    return FastStream(broker, specification=AsyncAPI(broker, title="ehrflow ingest", version="1"))


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level)
    configure_telemetry("ingest")
    run_asgi(create_app(settings), host=settings.host, port=settings.port, max_concurrency=settings.max_concurrency)


if __name__ == "__main__":
    main()
