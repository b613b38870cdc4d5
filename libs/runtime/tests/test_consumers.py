"""The one place errors become retries or dead letters (FastStream's in-memory broker)."""

from __future__ import annotations

from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from ehrflow_contracts import InferenceOutcome, topics
from ehrflow_runtime.consumers import retry_or_dead_letter
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable

MESSAGE = InferenceOutcome(organization_id="org1", correlation_id="c", workflow="news2", outcome="not-applicable")


def _broker() -> tuple[KafkaBroker, Any, list[dict[str, Any]]]:
    broker = KafkaBroker()
    dead = broker.publisher(topics.DEAD_LETTER)
    letters: list[dict[str, Any]] = []

    @broker.subscriber(topics.DEAD_LETTER, group_id="test")
    async def collect(msg: dict[str, Any]) -> None:
        letters.append(msg)

    return broker, dead, letters


async def test_permanent_errors_are_dead_lettered_once() -> None:
    broker, dead, letters = _broker()
    async with (
        TestKafkaBroker(broker),
        retry_or_dead_letter(
            message=MESSAGE, source_topic="t", dead_letters=dead, key=b"k", retry_delay_s=0, context={"focus": "X/1"}
        ) as failure,
    ):
        raise UpstreamRejected("org1 FHIR GET Observation answered 403", status=403)
    assert failure.error == "org1 FHIR GET Observation answered 403"
    [letter] = letters
    assert (letter["organization_id"], letter["source_topic"], letter["correlation_id"]) == ("org1", "t", "c")
    assert letter["payload"] == {"event_id": MESSAGE.event_id, "focus": "X/1"}


async def test_retryable_errors_are_raised_for_redelivery() -> None:
    broker, dead, letters = _broker()
    async with TestKafkaBroker(broker):
        with pytest.raises(UpstreamUnavailable):
            async with retry_or_dead_letter(
                message=MESSAGE, source_topic="t", dead_letters=dead, key=b"k", retry_delay_s=0
            ):
                raise UpstreamUnavailable("EHR answered 503")
    assert letters == []


async def test_success_leaves_no_trace() -> None:
    broker, dead, letters = _broker()
    async with (
        TestKafkaBroker(broker),
        retry_or_dead_letter(
            message=MESSAGE, source_topic="t", dead_letters=dead, key=b"k", retry_delay_s=0
        ) as failure,
    ):
        pass
    assert failure.error is None and letters == []
