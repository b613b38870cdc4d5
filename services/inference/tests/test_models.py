"""The guard every model adapter shares: timeout, retries, concurrency bound, circuit breaker, output schema.

Unit tests with a Python function as the endpoint; the adapters against real model servers are tested in
tests/integration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ehrflow_inference.contract import Model
from ehrflow_inference.models import Breaker, Guarded, InvalidModelOutput, Models, ModelUnavailable, RetryableCall
from ehrflow_runtime.errors import PermanentError


def _spec(**changes: Any) -> Model:
    fields = {"kind": "builtin", "name": "m", "version": "1", "entry_point": "json:dumps", "timeout_s": 1}
    return Model.model_validate({**fields, "retries": 2, **changes})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_retries_a_retryable_failure_then_answers() -> None:
    calls: list[int] = []

    async def flaky(inputs: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableCall("503", retry_after_s=0)
        return {"ok": True}

    assert await Guarded(_spec(), flaky, backoff_s=0).predict({}) == {"ok": True}
    assert len(calls) == 3


async def test_gives_up_after_the_last_retry_and_times_out_each_attempt() -> None:
    calls: list[int] = []

    async def silent(inputs: dict[str, Any]) -> Any:
        calls.append(1)
        await asyncio.Event().wait()

    with pytest.raises(ModelUnavailable, match=r"no answer within 0.01 s \(3 attempts\)"):
        await Guarded(_spec(timeout_s=0.01), silent, backoff_s=0).predict({})
    assert len(calls) == 3


async def test_the_circuit_opens_after_repeated_failures_and_lets_one_trial_through() -> None:
    clock, calls = Clock(), []

    async def down(inputs: dict[str, Any]) -> Any:
        calls.append(1)
        raise RetryableCall("connection refused")

    guarded = Guarded(_spec(retries=0), down, breaker=Breaker(threshold=2, open_s=30, clock=clock), backoff_s=0)
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="connection refused"):
            await guarded.predict({})
    with pytest.raises(ModelUnavailable, match="circuit open"):
        await guarded.predict({})
    assert len(calls) == 2  # the open circuit did not call
    clock.now = 31
    with pytest.raises(ModelUnavailable, match="connection refused"):
        await guarded.predict({})  # the half-open trial fails: open again
    with pytest.raises(ModelUnavailable, match="circuit open"):
        await guarded.predict({})
    assert len(calls) == 3
    clock.now = 62

    async def up(inputs: dict[str, Any]) -> Any:
        return {"ok": 1}

    guarded._attempt = up
    assert await guarded.predict({}) == {"ok": 1}
    assert guarded.breaker.state == "closed"


async def test_calls_in_flight_are_bounded() -> None:
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def slow(inputs: dict[str, Any]) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return {}

    guarded = Guarded(_spec(concurrency=2), slow)
    calls = [asyncio.create_task(guarded.predict({})) for _ in range(5)]
    for _ in range(20):  # let every task run as far as it can
        await asyncio.sleep(0)
    assert most == 2
    release.set()
    await asyncio.gather(*calls)
    assert most == 2


async def test_an_answer_outside_the_schema_is_invalid_and_names_where_not_what() -> None:
    async def answer(inputs: dict[str, Any]) -> Any:
        return {"probability": "Jane Doe"}

    schema = {"type": "object", "properties": {"probability": {"type": "number"}}}
    with pytest.raises(InvalidModelOutput) as caught:
        await Guarded(_spec(output_schema=schema), answer).predict({})
    assert "at /probability" in str(caught.value) and "Jane" not in str(caught.value)

    async def listing(inputs: dict[str, Any]) -> Any:
        return [1]

    with pytest.raises(InvalidModelOutput, match="answered list, not an object"):
        await Guarded(_spec(), listing).predict({})


async def test_one_client_per_endpoint() -> None:
    models = Models()
    spec = _spec()
    assert models.client(spec) is models.client(spec)
    assert models.client(spec) is not models.client(_spec(version="2"))
    assert await models.client(_spec(entry_point="json:loads")).predict('{"a": 1}') == {"a": 1}  # type: ignore[arg-type]


async def test_inputs_outside_the_input_schema_are_refused_before_the_call() -> None:
    calls: list[int] = []

    async def model(inputs: dict[str, Any]) -> Any:
        calls.append(1)
        return {}

    schema = {"type": "object", "required": ["age"], "properties": {"age": {"type": "number"}}}
    with pytest.raises(PermanentError, match="breaks its input schema at /age"):
        await Guarded(_spec(input_schema=schema), model).predict({"age": "old"})
    assert calls == []
