"""The model adapters against real model servers over real connections: MLServer (KServe v2) serving the
readmission model trained at set-up, and llama.cpp's OpenAI-compatible server with the tiny GGUF model.

429 and 503 come from a gateway in front of the server (``ehrflow_devstack.model_gateway``), as in production
they come from the mesh or gateway in front of a model; 5xx, timeouts and dead servers come from the server.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ehrflow_devstack.model_gateway import Gateway
from ehrflow_devstack.model_servers import start_llama_server, start_mlserver
from ehrflow_devstack.parts import Part
from ehrflow_inference.enabled import contract_for
from ehrflow_inference.models import Breaker, Guarded, InvalidModelOutput, Models, ModelUnavailable
from ehrflow_inference.models.kserve import kserve_v2
from ehrflow_inference.workflows.readmission import Readmission
from ehrflow_inference.workflows.tumor_board import TumorBoard, answer_schema

pytestmark = pytest.mark.integration

READMISSION = contract_for(Readmission(), {}, source=Readmission.contract_file, org=None).model
SUMMARY = contract_for(TumorBoard(), {}, source=TumorBoard.contract_file, org=None).model
FEATURES = {"input-0": [78.0, 2.0, 6.5, 5.0, 9.0]}


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Part]:
    part = start_mlserver(tmp_path_factory.mktemp("mlserver"))
    try:
        yield part
    finally:
        part.stop()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Part]:
    part = start_llama_server(tmp_path_factory.mktemp("llama"))
    try:
        yield part
    finally:
        part.stop()


@pytest.fixture()
async def gateway(mlserver: Part) -> AsyncIterator[Gateway]:
    gate = await Gateway(mlserver.url).start()
    try:
        yield gate
    finally:
        await gate.stop()


@pytest.fixture()
async def models() -> AsyncIterator[Models]:
    found = Models()
    try:
        yield found
    finally:
        await found.aclose()


def _kserve(models: Models, url: str, **changes: Any) -> Guarded:
    return models.client(READMISSION.model_copy(update={"endpoint": url, **changes}))


async def test_kserve_happy_path(mlserver: Part, models: Models) -> None:
    answer = await _kserve(models, mlserver.url).predict(FEATURES)
    low, high = answer["predict_proba"]
    assert 0 < high < 1 and abs(low + high - 1) < 1e-9
    older = await _kserve(models, mlserver.url).predict({"input-0": [30.0, 0.0, 1.0, 0.0, 0.0]})
    assert older["predict_proba"][1] < high  # the synthetic model's directions hold: fewer risks, lower risk


async def test_kserve_429_with_retry_after_then_answers(gateway: Gateway, models: Models) -> None:
    gateway.refuse_next = [(429, {"Retry-After": "0"}), (503, {})]
    answer = await _kserve(models, gateway.url, retries=2).predict(FEATURES)
    assert len(answer["predict_proba"]) == 2 and gateway.received == 3


async def test_kserve_5xx_from_the_server_gives_up_after_the_retries(gateway: Gateway, models: Models) -> None:
    # Three features for a five-feature model: scikit-learn raises and MLServer answers 500, every time.
    with pytest.raises(ModelUnavailable, match=r"answered 500 \(3 attempts\)"):
        await _kserve(models, gateway.url, retries=2).predict({"input-0": [1.0, 2.0, 3.0]})
    assert gateway.received == 3


async def test_kserve_answer_outside_the_contract_is_invalid(mlserver: Part, models: Models) -> None:
    # The class label instead of the probabilities: a real answer, not the one the contract's schema allows.
    with pytest.raises(InvalidModelOutput, match="breaks its output schema at /"):
        await _kserve(models, mlserver.url, outputs=("predict",)).predict(FEATURES)
    with pytest.raises(InvalidModelOutput, match=r"refused the request \(404\)"):
        await _kserve(models, mlserver.url, version="9.9.9").predict(FEATURES)


async def test_kserve_timeout_and_the_circuit_opening(gateway: Gateway, mlserver: Part, models: Models) -> None:
    """A stopped server (SIGSTOP: the connection is accepted, nothing answers) times out each attempt; after
    the breaker's threshold, calls fail at once without reaching the gateway; when the server is back, the
    half-open trial closes the circuit."""
    assert mlserver.process is not None
    clock = [0.0]
    spec = READMISSION.model_copy(update={"endpoint": gateway.url, "timeout_s": 0.5, "retries": 0})
    guarded = Guarded(spec, kserve_v2(spec, models._http), breaker=Breaker(2, 30, clock=lambda: clock[0]))
    mlserver.process.signal(signal.SIGSTOP)
    try:
        for _ in range(2):
            with pytest.raises(ModelUnavailable, match="no answer"):
                await guarded.predict(FEATURES)
        reached = gateway.received
        with pytest.raises(ModelUnavailable, match="circuit open"):
            await guarded.predict(FEATURES)
        assert gateway.received == reached
    finally:
        mlserver.process.signal(signal.SIGCONT)
    clock[0] = 31
    assert len((await guarded.predict(FEATURES))["predict_proba"]) == 2
    assert guarded.breaker.state == "closed"


async def test_openai_chat_structured_output_from_llama_cpp(llama: Part, models: Models) -> None:
    references = ["Condition/c1", "DiagnosticReport/d1"]
    spec = SUMMARY.model_copy(update={"endpoint": f"{llama.url}/v1"})
    answer = await models.client(spec).predict(
        {
            "system": "Summarize the record.",
            "user": "[Condition/c1] Condition: breast cancer\n[DiagnosticReport/d1] DiagnosticReport: biopsy",
            "schema": answer_schema(spec.output_schema, references),
        }
    )
    [statement] = answer["statements"]  # the tiny model closes everything as soon as the grammar allows
    assert statement["text"] and set(statement["sources"]) <= set(references)
    # The contract wants a field the request's schema did not ask for: the real answer lacks it.
    stricter = spec.model_copy(update={"output_schema": {"type": "object", "required": ["statements", "stage"]}})
    with pytest.raises(InvalidModelOutput, match="breaks its output schema"):
        await models.client(stricter).predict(
            {"system": "", "user": "x", "schema": answer_schema(spec.output_schema, references)}
        )


async def test_openai_chat_unreachable_and_refused(llama: Part, models: Models) -> None:
    down = SUMMARY.model_copy(update={"endpoint": "http://127.0.0.1:9/v1", "retries": 1})
    with pytest.raises(ModelUnavailable, match=r"cannot reach the model server \(2 attempts\)"):
        await models.client(down).predict({"system": "", "user": "x"})
    # A schema the server cannot turn into a grammar: the server refuses the request (400).
    spec = SUMMARY.model_copy(update={"endpoint": f"{llama.url}/v1"})
    with pytest.raises(InvalidModelOutput, match=r"refused the request \(400\)"):
        await models.client(spec).predict({"system": "", "user": "x", "schema": {"$ref": "#/nowhere"}})


async def test_openai_chat_429_5xx_timeout_and_circuit(llama: Part, models: Models) -> None:
    gate = await Gateway(llama.url).start()
    assert llama.process is not None
    try:
        spec = SUMMARY.model_copy(update={"endpoint": f"{gate.url}/v1", "retries": 1, "timeout_s": 1.0})
        ask = {"system": "", "user": "x", "schema": answer_schema(spec.output_schema, ["Condition/c1"])}
        gate.refuse_next = [(429, {"Retry-After": "0"})]
        assert (await models.client(spec).predict(ask))["statements"][0]["sources"] == ["Condition/c1"]
        gate.refuse_next = [(503, {}), (502, {})]
        with pytest.raises(ModelUnavailable, match=r"answered 502 \(2 attempts\)"):
            await models.client(spec).predict(ask)
        breaking = spec.model_copy(update={"name": "other", "breaker_failures": 2, "retries": 0})
        llama.process.signal(signal.SIGSTOP)
        try:
            for _ in range(2):
                with pytest.raises(ModelUnavailable, match="no answer"):
                    await models.client(breaking).predict(ask)
            reached = gate.received
            with pytest.raises(ModelUnavailable, match="circuit open"):
                await models.client(breaking).predict(ask)
            assert gate.received == reached
        finally:
            llama.process.signal(signal.SIGCONT)
    finally:
        await gate.stop()
