"""Wires the ingest service together. The only place that builds settings, broker and the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from starlette.applications import Starlette

from ehrflow_contracts import topics
from ehrflow_ingest.app import IngestContext, routes
from ehrflow_ingest.channels import declare
from ehrflow_ingest.dedupe import Dedupe
from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_ingest.settings import IngestSettings
from ehrflow_runtime.broker import broker_ready, ensure_topics, make_broker
from ehrflow_runtime.health import health_routes
from ehrflow_runtime.http_errors import exception_handlers
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.redis_client import make_redis
from ehrflow_runtime.serve import run_asgi
from ehrflow_runtime.settings import KafkaSettings
from ehrflow_runtime.telemetry import configure_telemetry


def create_app(settings: IngestSettings, broker: KafkaBroker | None = None) -> Starlette:
    registry = load_registry(settings.organizations_file)
    broker = broker or make_broker(settings.kafka, client_id="ingest")
    redis = make_redis(settings.redis_url.get_secret_value())
    ctx = IngestContext(
        registry=registry,
        secrets=SenderSecrets(list(registry)),
        publishers=declare(broker),
        max_body_bytes=settings.max_body_bytes,
        publish_timeout_s=settings.kafka.publish_timeout_s,
        dedupe=Dedupe(redis),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ensure_topics(settings.kafka, topics.ALL)
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            await redis.aclose()

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    async def ready() -> bool:
        return await broker_ready(broker)

    return Starlette(
        routes=[*routes(ctx), *health_routes({"broker": ready}, optional={"redis": redis_ok})],
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers()),
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
    run_asgi(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
