"""The Kafka broker every service uses: FastStream over aiokafka, acks=all, telemetry in the headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry.trace import TracerProvider

from ehrflow_runtime.consumers import ConsumerErrors
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings, read_secret_file

log = logging.getLogger(__name__)


SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def security(kafka: KafkaSettings) -> BaseSecurity | None:
    """FastStream's description of how to reach the brokers (TLS, SASL), or None for PLAINTEXT.

    The broker takes it as it is; the plain aiokafka clients (admin, topic reader, dead-letter replay,
    ingest's sink) take the same thing as keyword arguments from ``client_options``.
    """
    if kafka.security_protocol == "PLAINTEXT":
        return None
    use_ssl = kafka.security_protocol.endswith("SSL")
    context = (
        create_ssl_context(
            cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file else None,
            certfile=str(kafka.ssl_cert_file) if kafka.ssl_cert_file else None,
            keyfile=str(kafka.ssl_key_file) if kafka.ssl_key_file else None,
        )
        if use_ssl
        else None
    )
    if not kafka.security_protocol.startswith("SASL_"):
        return BaseSecurity(ssl_context=context, use_ssl=True)
    assert kafka.sasl_username is not None and kafka.sasl_password_file is not None  # KafkaSettings checks
    password = read_secret_file(kafka.sasl_password_file).get_secret_value()
    return SASL[kafka.sasl_mechanism](kafka.sasl_username, password, ssl_context=context, use_ssl=use_ssl)


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security keyword arguments of an aiokafka client."""
    return {"bootstrap_servers": kafka.bootstrap_servers, **parse_security(security(kafka))}


def make_broker(
    kafka: KafkaSettings,
    *,
    client_id: str,
    tracer_provider: TracerProvider | None = None,
    consumer: ConsumerPolicy | None = None,
) -> KafkaBroker:
    """A broker whose publishes are durable (acks=all) and carry the W3C trace context in Kafka headers.

    256 KiB batches with ``linger_ms=0``: the default 16 KiB batch holds only a few FHIR messages and
    made p99 ~440 ms under load on the development machines; lingering in a request path caps throughput.
    Every consumer of the broker retries and dead-letters by ``consumer`` (``ehrflow_runtime.consumers``).
    """
    return KafkaBroker(
        kafka.bootstrap_servers,
        security=security(kafka),
        client_id=client_id,
        acks="all",
        enable_idempotence=kafka.enable_idempotence,
        max_batch_size=256 * 1024,
        max_request_size=kafka.max_message_bytes,
        linger_ms=0,
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            ConsumerErrors(consumer or ConsumerPolicy()),
        ],
        logger=logging.getLogger(f"ehrflow.{client_id}.broker"),
    )


async def ensure_topics(kafka: KafkaSettings, topics: Iterable[str]) -> None:
    """Create missing topics (a platform may manage them instead: set ``create_topics`` false)."""
    if not kafka.create_topics:
        return
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica created it first
                await admin.create_topics([new_topic(kafka, t) for t in missing])
            log.info("created topics", extra={"count": len(missing)})
    finally:
        await admin.close()


def new_topic(kafka: KafkaSettings, name: str) -> NewTopic:
    """A topic as ehrflow creates it: records up to ``max_message_bytes`` (Kafka's default is 1 MiB)."""
    return NewTopic(
        name,
        kafka.partitions,
        kafka.replication_factor,
        topic_configs={"max.message.bytes": str(kafka.max_message_bytes)},
    )


async def broker_ready(broker: KafkaBroker, timeout: float = 2.0) -> bool:
    try:
        return bool(await asyncio.wait_for(broker.ping(timeout=timeout), timeout + 0.5))
    except Exception:
        return False
