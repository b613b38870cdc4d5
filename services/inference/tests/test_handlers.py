"""Inference's consumer on FastStream's in-memory broker: trigger events become drafts, outcomes, dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker

from ehrflow_contracts import topics
from ehrflow_devstack.config import generate, write_registry
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_devstack.scenario import Vitals, panel, vital_observations
from ehrflow_inference.enabled import enabled_contracts
from ehrflow_inference.handlers import Deps, declare
from ehrflow_inference.models import Models
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings

WHEN = "2026-11-21T08:00:00+00:00"


def _wired(tmp_path: Path, ehr: MockFhir) -> tuple[KafkaBroker, dict[str, list[dict[str, Any]]]]:
    """Inference's handlers on an in-memory broker, reading ``ehr``; collects what they publish."""
    config = generate(tmp_path)
    write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    registry = load_registry(config.organizations_file)
    org1 = registry.get("org1")
    assert org1 is not None
    fhir = ehr.client(org1)
    broker = make_broker(KafkaSettings(), client_id="inference", consumer=ConsumerPolicy(backoff_s=0, retry_delay_s=0))
    deps = Deps(enabled=enabled_contracts(registry), fhir_for=lambda org, feature: fhir, models=Models())
    declare(broker, lambda: deps)
    published: dict[str, list[dict[str, Any]]] = {}
    for topic in (topics.DRAFT_PROPOSED, topics.DRAFT_SHADOWED, topics.INFERENCE_OUTCOME, topics.DEAD_LETTER):
        published[topic] = []
        broker.subscriber(topic, group_id=f"test-{topic}")(_collect(published[topic]))
    return broker, published


def _event(trigger: dict[str, Any]) -> dict[str, Any]:
    ref = f"Observation/{trigger['id']}"
    return {
        "organization_id": "org1",
        "correlation_id": "c",
        "flavour": "r4-backport",
        "notification_type": "event-notification",
        "content_level": "full-resource",
        "focus": {"reference": ref, "original": ref},
        "resource": trigger,
        "dedupe_key": ref,
        "patient": trigger["subject"]["reference"],
    }


async def test_trigger_event_publishes_a_draft_and_incomplete_an_outcome(tmp_path: Path) -> None:
    ehr = MockFhir()
    broker, published = _wired(tmp_path, ehr)
    ehr.add(*vital_observations("Patient/p1", Vitals(26, 90, 4, 95, 125, "A", 38.6), WHEN))
    ehr.add(*vital_observations("Patient/p2", Vitals(18, 96, 0, 135, 80, None, 36.8), WHEN))
    triggers = [panel("Patient/p1", [], WHEN), panel("Patient/p2", [], WHEN)]
    ehr.add(*triggers)
    async with TestKafkaBroker(broker) as test_broker:
        for trigger in triggers:
            await test_broker.publish(_event(trigger), topic=topics.NOTIFICATION_RECEIVED)
    drafts, outcomes = published[topics.DRAFT_PROPOSED], published[topics.INFERENCE_OUTCOME]
    assert [(d["patient"], d["summary"]["band"]) for d in drafts] == [("Patient/p1", "high")]
    assert [(o["patient"], o["outcome"]) for o in outcomes] == [("Patient/p2", "insufficient-data")]


async def test_a_forbidden_read_is_an_outcome_and_a_bad_request_dead_letters_the_event(tmp_path: Path) -> None:
    ehr = MockFhir(fail_next=[403, 400])
    broker, published = _wired(tmp_path, ehr)
    trigger = panel("Patient/p1", [], WHEN)
    trigger["id"] = "panel-1"
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(_event(trigger), topic=topics.NOTIFICATION_RECEIVED)
        await test_broker.publish(_event(trigger), topic=topics.NOTIFICATION_RECEIVED)
    assert published[topics.DRAFT_PROPOSED] == []
    [forbidden] = published[topics.INFERENCE_OUTCOME]
    assert (forbidden["outcome"], forbidden["missing"]) == ("forbidden", ["system/Observation.read"])
    [letter] = published[topics.DEAD_LETTER]
    assert letter["source_topic"] == topics.NOTIFICATION_RECEIVED and "400" in letter["error"]
    assert letter["payload"]["record"]["focus"]["reference"] == "Observation/panel-1"


async def test_a_trigger_of_the_wrong_shape_is_an_outcome_not_a_poison_record(tmp_path: Path) -> None:
    """A full-resource payload whose ``subject`` is the string ``"Patient/1"`` raised AttributeError on every
    redelivery; now it is checked against the FHIR models first and named in an ``invalid-input`` outcome."""
    ehr = MockFhir()
    broker, published = _wired(tmp_path, ehr)
    trigger = {**panel("Patient/p1", [], WHEN), "id": "panel-1"}
    event = _event(trigger)
    event["resource"] = {**trigger, "subject": "Patient/1"}
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(event, topic=topics.NOTIFICATION_RECEIVED)
    assert published[topics.DRAFT_PROPOSED] == [] and published[topics.DEAD_LETTER] == []
    [outcome] = published[topics.INFERENCE_OUTCOME]
    assert outcome["outcome"] == "invalid-input"
    assert outcome["detail"] == "the trigger is not a valid Observation at subject"


def _collect(into: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    async def collect(msg: dict[str, Any]) -> None:
        into.append(msg)

    return collect
