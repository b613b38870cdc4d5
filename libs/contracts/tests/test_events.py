"""Event contracts: round trips, tolerance of added fields, immutability, topic naming."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ehrflow_contracts import (
    DraftProposed,
    InferenceOutcome,
    ModelRef,
    NotificationReceived,
    ReviewDecided,
    WritebackCompleted,
    envelope,
    topics,
)
from ehrflow_contracts.events import Reference
from ehrflow_contracts.fhir import SYSTEM_TAG, TAG_GENERATED, is_generated_by_ehrflow, validate

EXAMPLES = [
    NotificationReceived(
        organization_id="org1",
        correlation_id="c1",
        flavour="r4-backport",
        notification_type="event-notification",
        content_level="id-only",
        event_number=3,
        focus=Reference(reference="Observation/1", original="http://x/fhir/Observation/1"),
        patient="Patient/9",
        dedupe_key="k",
    ),
    DraftProposed(
        organization_id="org1",
        correlation_id="c1",
        draft_id="d1",
        workflow="news2",
        model=ModelRef(name="m", version="1"),
        patient="Patient/9",
        resource={"resourceType": "RiskAssessment", "status": "preliminary", "subject": {"reference": "Patient/9"}},
        basis=("Observation/1/_history/1",),
        summary={"score": 3},
    ),
    InferenceOutcome(
        organization_id="org2",
        correlation_id="c2",
        workflow="news2",
        outcome="insufficient-data",
        missing=("consciousness",),
    ),
    ReviewDecided(
        organization_id="org1",
        correlation_id="c1",
        draft_id="d1",
        decision="approved",
        reviewer="Practitioner/7",
        decided_at=datetime(2026, 11, 21, tzinfo=UTC),
    ),
    WritebackCompleted(
        organization_id="org1",
        correlation_id="c1",
        draft_id="d1",
        status="written",
        resource="RiskAssessment/5",
        provenance="Provenance/6",
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: object) -> None:
    cls = type(event)
    assert cls.model_validate_json(event.model_dump_json()) == event  # type: ignore[attr-defined]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_added_fields_are_ignored(event: object) -> None:
    data = {**event.model_dump(mode="json"), "field_from_a_newer_producer": 1}  # type: ignore[attr-defined]
    assert type(event).model_validate(data) == event


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        EXAMPLES[0].organization_id = "org2"  # type: ignore[misc]


def test_envelope_fields_are_present() -> None:
    dumped = EXAMPLES[0].model_dump()
    assert {"event_id", "organization_id", "occurred_at", "received_at", "schema_version", "correlation_id"} <= set(
        dumped
    )


def test_topic_names_follow_the_convention_and_are_unique() -> None:
    assert len(set(topics.ALL)) == len(topics.ALL)
    for name in topics.ALL:
        assert re.fullmatch(r"ehrflow\.[a-z]+\.[a-z]+\.[a-z]+\.v\d+", name), name


def test_fhir_validation_rejects_unknown_elements() -> None:
    with pytest.raises(ValidationError):
        validate(
            {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"}, "bogus": 1}
        )


def test_generated_tag_is_recognised() -> None:
    assert is_generated_by_ehrflow({"meta": {"tag": [{"system": SYSTEM_TAG, "code": TAG_GENERATED}]}})
    assert not is_generated_by_ehrflow({"meta": {"tag": [{"system": "other", "code": TAG_GENERATED}]}})
    assert not is_generated_by_ehrflow(None)


@given(st.binary(min_size=16, max_size=16))
def test_event_ids_are_the_uuid4_of_the_same_random_bytes(random: bytes) -> None:
    with patch.object(envelope.os, "urandom", return_value=random) as urandom:
        event_id = envelope.new_event_id()
    urandom.assert_called_once_with(16)
    assert event_id == str(uuid.UUID(bytes=random, version=4))


def test_event_ids_differ() -> None:
    ids = {envelope.new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
