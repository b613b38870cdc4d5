"""One trace from the EHR's webhook to the draft, across Kafka (in-memory span exporter).

Ingest and inference run in this process, on a broker of the test's own, so their spans can be
collected; inference reads organization 1's real sandbox EHR with tokens from the real auth service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette

from ehrflow_contracts import topics
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_records
from ehrflow_devstack.parts import Part
from ehrflow_devstack.samples import r4_backport
from ehrflow_devstack.scenario import Ehr, cases
from ehrflow_devstack.stack import Stack
from ehrflow_inference.main import create_app as create_inference
from ehrflow_inference.settings import InferenceSettings
from ehrflow_ingest.main import create_app as create_ingest
from ehrflow_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    return memory


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    async with app.router.lifespan_context(app):
        yield app


async def test_webhook_trace_reaches_the_draft(
    stack: Stack, private_broker: Part, exporter: InMemorySpanExporter
) -> None:
    assert stack.config
    kafka = {"bootstrap_servers": private_broker.url, "enable_idempotence": False}
    assert stack.redis
    ingest = create_ingest(
        IngestSettings(organizations_file=stack.config.organizations_file, kafka=kafka, redis_url=stack.redis.url)
    )
    inference = create_inference(
        InferenceSettings(
            organizations_file=stack.config.organizations_file,
            kafka=kafka,
            consumer={"retry_delay_s": 0.5},
            auth={
                "url": stack.urls["auth"],
                "service_name": "inference",
                "credential_file": stack.config.credentials_dir / "inference",
            },
        )
    )
    ehr = Ehr(stack.ehrs["org1"].url, stack.config.admin_token)
    case = ehr.record_patient(cases("org1")[1])
    trigger = ehr.http.get(f"/{case.ids['panel']}").json()
    ehr.close()

    async with running(ingest), running(inference):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest), base_url="http://ingest") as client:
            response = await client.post(
                "/v1/notify/org1",
                content=json.dumps(r4_backport(events=[(1, trigger)], subscription=f"trace-{uuid.uuid4().hex[:8]}")),
                headers={
                    "Content-Type": "application/fhir+json",
                    WEBHOOK_HEADER: stack.config.webhook_secret("org1"),
                    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                },
            )
        assert response.status_code == 200
        drafts: list[tuple[dict, dict[str, bytes]]] = []  # type: ignore[type-arg]
        for _ in range(120):
            drafts = await read_records(private_broker.url, topics.DRAFT_PROPOSED)
            if drafts:
                break
            await asyncio.sleep(0.5)
    [(draft, headers)] = drafts
    assert draft["patient"] == case.ids["patient"] and draft["summary"]["band"] == "high"
    assert headers["traceparent"].decode().split("-")[1] == TRACE_ID

    spans = exporter.get_finished_spans()
    webhook = [s for s in spans if s.name == "ingest notification"]
    published = [s for s in spans if s.name.startswith(topics.DRAFT_PROPOSED) and s.kind == trace.SpanKind.PRODUCER]
    assert webhook and published
    assert {format(s.context.trace_id, "032x") for s in webhook + published} == {TRACE_ID}
