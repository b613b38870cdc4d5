"""Wires the inference service together: settings, broker, clients, handlers, health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from starlette.applications import Starlette

from ehrflow_contracts import topics
from ehrflow_inference.checking import check_all, render
from ehrflow_inference.cli import run
from ehrflow_inference.enabled import enabled_contracts
from ehrflow_inference.handlers import Deps, declare
from ehrflow_inference.models import Models
from ehrflow_inference.retries import Parking
from ehrflow_inference.settings import InferenceSettings
from ehrflow_runtime.broker import broker_ready, ensure_topics, make_broker
from ehrflow_runtime.errors import ConfigurationError
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

log = logging.getLogger("ehrflow.inference")


def create_app(settings: InferenceSettings, broker: KafkaBroker | None = None) -> Starlette:
    broker = broker or make_broker(settings.kafka, client_id="inference", consumer=settings.consumer)
    http = make_http_client(settings.auth.timeout_s)
    tokens = TokenClient.configured(http, settings.auth)
    clients = OrganizationClients(http, timeout_s=settings.auth.timeout_s)
    models = Models()
    redis = make_redis(settings.redis_url.get_secret_value())
    parking = Parking(redis)

    def configured(registry: Registry) -> Deps:
        """What depends on the registry: rebuilt when it changes (an organization removed stops at once; a
        contract that does not validate keeps the last good configuration, or stops the start-up)."""
        enabled = enabled_contracts(registry)
        fhir = {
            (org.id, entry.contract.feature): FhirClient(clients.for_org(org), tokens, org, entry.contract.feature)
            for org in registry
            for entry in enabled[org.id]
        }
        return Deps(enabled=enabled, fhir_for=lambda org, feature: fhir[(org, feature)], models=models, parking=parking)

    live = Live(settings.organizations_file, configured, credentials=False)
    declare(broker, lambda: live.current, settings.retry, workers=settings.workers)

    async def check_contracts() -> None:
        """Compare each enabled contract with its EHR before taking traffic (``EHRFLOW_CONTRACT_CHECK``)."""
        if settings.contract_check == "off":
            return
        reports = await check_all(live.registry, live.current.enabled, clients.for_org)
        for report in reports:
            if report.unreachable:
                log.warning(
                    "contracts not checked", extra={"org": report.organization.id, "reason": report.unreachable}
                )
        mismatched = [r for r in reports if r.unreachable is None and not r.ok]
        if mismatched:
            text = render(mismatched)
            if settings.contract_check == "enforce":
                raise ConfigurationError(f"workflow contracts do not match their EHRs:\n{text}")
            log.error("workflow contracts do not match their EHRs", extra={"report": text})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await check_contracts()
        await ensure_topics(settings.kafka, topics.ALL)
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
            await models.aclose()
            await redis.aclose()

    async def broker_ok() -> bool:
        return await broker_ready(broker)

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    return Starlette(
        routes=health_routes({"broker": broker_ok, "redis": redis_ok}),
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers()),
    )


def _documentation_only() -> Deps:
    raise RuntimeError("handlers declared for the AsyncAPI document only")


def asyncapi() -> FastStream:
    broker = make_broker(KafkaSettings(bootstrap_servers="kafka:9092"), client_id="inference")
    declare(broker, _documentation_only)
    return FastStream(broker, specification=AsyncAPI(broker, title="ehrflow inference", version="1"))


def main() -> None:
    if len(sys.argv) > 1:
        sys.exit(run(sys.argv[1:]))
    settings = InferenceSettings()
    configure_logging(settings.log_level)
    configure_telemetry("inference")
    run_asgi(create_app(settings), host=settings.host, port=settings.port, max_concurrency=settings.max_concurrency)


if __name__ == "__main__":
    main()
