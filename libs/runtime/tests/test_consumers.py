"""The one place errors become redeliveries, retries or dead letters (FastStream's in-memory broker).

The integration test ``tests/integration/test_poison_records.py`` shows the same on the real broker,
with the records behind a poison one processed.
"""

from __future__ import annotations

from typing import Any

import pytest
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TestKafkaBroker
from redis.exceptions import ConnectionError as RedisConnectionError

from ehrflow_contracts import InferenceOutcome, topics
from ehrflow_runtime.broker import make_broker
from ehrflow_runtime.consumers import where
from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.settings import ConsumerPolicy, KafkaSettings

MESSAGE = InferenceOutcome(organization_id="org1", correlation_id="c", workflow="news2", outcome="not-applicable")
POLICY = ConsumerPolicy(attempts=3, backoff_s=0, retry_delay_s=0)


def _broker(fail: Any, policy: ConsumerPolicy = POLICY) -> tuple[KafkaBroker, list[int], list[dict[str, Any]]]:
    """A broker whose one consumer calls ``fail(attempt)`` for each try; the dead letters it writes."""
    broker = make_broker(KafkaSettings(), client_id="test", consumer=policy)
    calls: list[int] = []
    letters: list[dict[str, Any]] = []

    @broker.subscriber("source", group_id="g", ack_policy=AckPolicy.NACK_ON_ERROR)
    async def handle(msg: InferenceOutcome) -> None:
        calls.append(len(calls) + 1)
        fail(len(calls))

    @broker.subscriber(topics.DEAD_LETTER, group_id="test")
    async def collect(msg: dict[str, Any]) -> None:
        letters.append(msg)

    return broker, calls, letters


def _raise(exc: BaseException) -> Any:
    def fail(_: int) -> None:
        raise exc

    return fail


async def test_an_unexpected_error_is_tried_the_configured_times_then_dead_lettered() -> None:
    broker, calls, letters = _broker(_raise(AttributeError("'str' object has no attribute 'get' (Patient/1)")))
    async with TestKafkaBroker(broker) as br:
        await br.publish(MESSAGE, "source", key=b"org1|Patient/1")
    assert calls == [1, 2, 3]
    [letter] = letters
    assert (letter["organization_id"], letter["correlation_id"], letter["source_topic"]) == ("org1", "c", "source")
    assert letter["error"].startswith("AttributeError at test_consumers.py:")
    assert letter["error"].endswith("after 3 attempts")
    assert "Patient/1" not in letter["error"], "an error's message may quote data: only its type and place"
    assert letter["payload"]["record"]["event_id"] == MESSAGE.event_id
    assert letter["payload"]["key"] == "org1|Patient/1"


async def test_a_record_that_succeeds_on_a_later_try_is_not_dead_lettered() -> None:
    def flaky(attempt: int) -> None:
        if attempt < 3:
            raise KeyError("id")

    broker, calls, letters = _broker(flaky)
    async with TestKafkaBroker(broker) as br:
        await br.publish(MESSAGE, "source")
    assert calls == [1, 2, 3] and letters == []


async def test_permanent_errors_are_dead_lettered_at_once() -> None:
    broker, calls, letters = _broker(_raise(UpstreamRejected("org1 FHIR GET Observation answered 403", status=403)))
    async with TestKafkaBroker(broker) as br:
        await br.publish(MESSAGE, "source")
    assert calls == [1]
    assert [letter["error"] for letter in letters] == ["org1 FHIR GET Observation answered 403"]


@pytest.mark.parametrize("exc", [UpstreamUnavailable("EHR answered 503"), RedisConnectionError("refused")])
async def test_transient_errors_are_raised_for_redelivery_not_dead_lettered(exc: Exception) -> None:
    broker, calls, letters = _broker(_raise(exc))
    async with TestKafkaBroker(broker) as br:
        with pytest.raises(type(exc)):
            await br.publish(MESSAGE, "source")
    assert calls == [1] and letters == []


async def test_a_record_of_the_wrong_shape_is_dead_lettered_without_its_values() -> None:
    broker, calls, letters = _broker(_raise(AssertionError("never called")))
    async with TestKafkaBroker(broker) as br:
        await br.publish({"organization_id": "org1", "correlation_id": "c", "workflow": 7}, "source")
    assert calls == []
    [letter] = letters
    assert letter["error"].startswith("data does not validate as ")
    fields = letter["error"].split(" at ", 1)[1]
    assert "outcome" in fields and "workflow" in fields and "7" not in fields


async def test_a_record_that_is_not_json_is_dead_lettered() -> None:
    broker, calls, letters = _broker(_raise(AssertionError("never called")))
    async with TestKafkaBroker(broker) as br:
        await br.publish(b"\xff not json", "source", key=b"org2|Patient/9")
    assert calls == []
    [letter] = letters
    assert letter["organization_id"] == "org2", "the organization is read from the record's key"
    assert letter["error"].startswith("data does not validate as ") and letter["error"].endswith(" at msg")


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = ConsumerPolicy(backoff_s=1, max_backoff_s=5)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_where_names_the_type_and_line_only() -> None:
    try:
        {}["Jane Doe"]
    except KeyError as exc:
        assert where(exc).startswith("KeyError at test_consumers.py:")
        assert "Jane" not in where(exc)


def test_a_broker_made_without_a_policy_still_guards_its_consumers() -> None:
    assert any(type(m).__name__ == "ConsumerErrors" for m in make_broker(KafkaSettings(), client_id="x").middlewares)
