"""Inference's consumer on FastStream's in-memory broker: a trigger event becomes a published draft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pydantic import SecretStr

from ehrflow_contracts import topics
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.scenario import Vitals, panel, vital_observations
from ehrflow_inference.handlers import Deps, declare
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.tokens import TokenClient


async def test_trigger_event_publishes_a_draft_and_incomplete_an_outcome(tmp_path: Path) -> None:
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    registry = load_registry(config.organizations_file)
    ehr = MockFhir()
    http = httpx.AsyncClient(transport=ehr.transport())
    tokens = TokenClient(http, base_url="http://auth", service_name="inference", credential=SecretStr("c"))
    fhir = FhirClient(http, tokens, registry.get("org1"), "news2")  # type: ignore[arg-type]
    broker = KafkaBroker()
    declare(broker, lambda: Deps(registry=registry, fhir_for=lambda org: fhir, retry_delay_s=0))
    drafts: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    broker.subscriber(topics.DRAFT_PROPOSED, group_id="t1")(_collect(drafts))
    broker.subscriber(topics.INFERENCE_OUTCOME, group_id="t2")(_collect(outcomes))

    when = "2026-11-21T08:00:00+00:00"
    complete = vital_observations("Patient/p1", Vitals(26, 90, 4, 95, 125, "A", 38.6), when)
    incomplete = vital_observations("Patient/p2", Vitals(18, 96, 0, 135, 80, None, 36.8), when)
    ehr.add(*complete, *incomplete)
    triggers = [panel("Patient/p1", [], when), panel("Patient/p2", [], when)]
    ehr.add(*triggers)
    async with TestKafkaBroker(broker) as test_broker:
        for trigger in triggers:
            ref = f"Observation/{trigger['id']}"
            await test_broker.publish(
                {
                    "organization_id": "org1",
                    "correlation_id": "c",
                    "flavour": "r4-backport",
                    "notification_type": "event-notification",
                    "content_level": "full-resource",
                    "focus": {"reference": ref, "original": ref},
                    "resource": trigger,
                    "dedupe_key": ref,
                    "patient": trigger["subject"]["reference"],
                },
                topic=topics.NOTIFICATION_RECEIVED,
            )
    assert [(d["patient"], d["summary"]["band"]) for d in drafts] == [("Patient/p1", "high")]
    assert [(o["patient"], o["outcome"]) for o in outcomes] == [("Patient/p2", "insufficient-data")]


async def test_forbidden_ehr_dead_letters_the_event(tmp_path: Path) -> None:
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    registry = load_registry(config.organizations_file)
    ehr = MockFhir(fail_next=[403])
    http = httpx.AsyncClient(transport=ehr.transport())
    tokens = TokenClient(http, base_url="http://auth", service_name="inference", credential=SecretStr("c"))
    fhir = FhirClient(http, tokens, registry.get("org1"), "news2")  # type: ignore[arg-type]
    broker = KafkaBroker()
    declare(broker, lambda: Deps(registry=registry, fhir_for=lambda org: fhir, retry_delay_s=0))
    drafts: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []
    broker.subscriber(topics.DRAFT_PROPOSED, group_id="t1")(_collect(drafts))
    broker.subscriber(topics.DEAD_LETTER, group_id="t2")(_collect(letters))
    trigger = panel("Patient/p1", [], "2026-11-21T08:00:00+00:00")
    trigger["id"] = "panel-1"
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            {
                "organization_id": "org1",
                "correlation_id": "c",
                "flavour": "r4-backport",
                "notification_type": "event-notification",
                "content_level": "full-resource",
                "focus": {"reference": "Observation/panel-1", "original": "Observation/panel-1"},
                "resource": trigger,
                "dedupe_key": "k",
                "patient": "Patient/p1",
            },
            topic=topics.NOTIFICATION_RECEIVED,
        )
    assert drafts == []
    [letter] = letters
    assert letter["source_topic"] == topics.NOTIFICATION_RECEIVED and "403" in letter["error"]
    assert letter["payload"]["focus"] == "Observation/panel-1"


def _collect(into: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    async def collect(msg: dict[str, Any]) -> None:
        into.append(msg)

    return collect
