"""Wires the writeback service together: settings, Redis, broker, clients, handlers, review API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from starlette.applications import Starlette

from ehrflow_contracts import topics
from ehrflow_runtime import dead_letters
from ehrflow_runtime.broker import broker_ready, ensure_topics, make_broker
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.http_errors import exception_handlers
from ehrflow_runtime.live import Live
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.redis_client import make_redis
from ehrflow_runtime.sealing import Sealer, read_key_file
from ehrflow_runtime.serve import make_http_client, run_asgi
from ehrflow_runtime.sessions import SessionClient
from ehrflow_runtime.settings import KafkaSettings, read_secret_file
from ehrflow_runtime.telemetry import configure_telemetry
from ehrflow_runtime.tls import OrganizationClients
from ehrflow_runtime.tokens import TokenClient
from ehrflow_writeback.app import ReviewAccess, ReviewContext, routes
from ehrflow_writeback.cds import cds_routes
from ehrflow_writeback.cds.trust import CdsTrust
from ehrflow_writeback.ehr_health import EhrHealth
from ehrflow_writeback.handlers import Deps, declare
from ehrflow_writeback.queue import ReviewQueue
from ehrflow_writeback.rebuild import rebuild
from ehrflow_writeback.screen import screen_routes
from ehrflow_writeback.screen.security import ScreenCookie
from ehrflow_writeback.settings import WritebackSettings


def create_app(settings: WritebackSettings, broker: KafkaBroker | None = None) -> Starlette:
    broker = broker or make_broker(settings.kafka, client_id="writeback", consumer=settings.consumer)
    redis = make_redis(settings.redis_url.get_secret_value())
    http = make_http_client(settings.auth.timeout_s)
    credential = read_secret_file(settings.auth.credential_file)
    tokens = TokenClient(
        http,
        base_url=settings.auth.url,
        service_name=settings.auth.service_name,
        credential=credential,
    )
    sessions = SessionClient(
        http,
        base_url=settings.auth.url,
        service_name=settings.auth.service_name,
        credential=credential,
    )
    clients = OrganizationClients(http, timeout_s=settings.auth.timeout_s)
    sealer = Sealer(read_key_file(settings.queue_key_file, "review queue key"))
    queue = ReviewQueue(redis, sealer, ttl_s=settings.draft_ttl_s)

    def configured(registry: Registry) -> Configured:
        """What depends on the registry: rebuilt when it (or a review key file) changes."""
        fhir: dict[tuple[str, str, str], FhirClient] = {}

        def fhir_for(org_id: str, feature: str, resource_type: str) -> FhirClient:
            """The client that writes ``resource_type`` for a draft's organization and workflow feature: at the
            organization's route for that type, else its FHIR base. A feature the organization does not (or no
            longer) have, or a type it refuses, is a refusal to write, not a retry."""
            org = registry.get(org_id)
            if org is None or feature not in org.features:
                raise ConfigurationError(f"organization {org_id} has no feature '{feature}' to write with")
            if resource_type in org.writeback.refuse:
                raise ConfigurationError(f"organization {org_id} does not accept a {resource_type} from ehrflow")
            base = org.writeback.routes.get(resource_type, org.fhir_base_url)
            key = (org_id, feature, base)
            if key not in fhir:
                fhir[key] = FhirClient(clients.for_org(org), tokens, org, feature, base=base)
            return fhir[key]

        def audit_feature(org_id: str) -> str | None:
            org = registry.get(org_id)
            return org.audit.feature if org is not None and org.audit.write_to_ehr else None

        return Configured(
            deps=Deps(queue=queue, fhir_for=fhir_for, health=health, audit_feature=audit_feature),
            review=ReviewContext(
                registry=registry,
                queue=queue,
                publishers=publishers,
                publish_timeout_s=settings.kafka.publish_timeout_s,
            ),
            access=ReviewAccess(registry, sessions),
        )

    health = EhrHealth()
    publishers = declare(
        broker,
        lambda: live.current.deps,
        settings.retry,
        workers=settings.workers,
        audit_timeout_s=settings.kafka.publish_timeout_s,
    )
    trust = CdsTrust(redis, clients.for_org)
    live = Live(settings.organizations_file, configured, credentials=False)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ensure_topics(settings.kafka, topics.ALL)
        if not await queue.view_built():  # a new or flushed Redis: the view comes back from the log first
            await rebuild(settings.kafka, queue)
        await broker.start()
        watching = asyncio.create_task(live.watch(settings.registry_reload_s))
        try:
            yield
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            await broker.stop()
            await clients.aclose()
            await http.aclose()
            await redis.aclose()

    async def broker_ok() -> bool:
        return await broker_ready(broker)

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    return Starlette(
        routes=[
            *routes(lambda: live.current.review, lambda: live.current.access),
            *screen_routes(lambda: live.current.review, lambda: live.current.access, ScreenCookie(sealer)),
            *cds_routes(lambda: live.current.review, lambda: trust, settings.public_url),
            *health_routes({"broker": broker_ok, "redis": redis_ok}),
        ],
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers()),
    )


@dataclass(frozen=True)
class Configured:
    deps: Deps
    review: ReviewContext
    access: ReviewAccess


def _documentation_only() -> Deps:
    raise RuntimeError("handlers declared for the AsyncAPI document only")


def asyncapi() -> FastStream:
    broker = make_broker(KafkaSettings(bootstrap_servers="kafka:9092"), client_id="writeback")
    declare(broker, _documentation_only)
    return FastStream(broker, specification=AsyncAPI(broker, title="ehrflow writeback", version="1"))


def run(argv: list[str]) -> int:
    """``ehrflow-writeback dead-letters list|replay``: the decisions writeback gave up on (and any other)."""
    parser = argparse.ArgumentParser(prog="ehrflow-writeback", description="ehrflow's writeback service and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    dead_letters.add_command(sub)
    return dead_letters.run_command(parser, parser.parse_args(argv))


def main() -> None:
    if len(sys.argv) > 1:
        sys.exit(run(sys.argv[1:]))
    settings = WritebackSettings()
    configure_logging(settings.log_level)
    configure_telemetry("writeback")
    run_asgi(create_app(settings), host=settings.host, port=settings.port, max_concurrency=settings.max_concurrency)


if __name__ == "__main__":
    main()
