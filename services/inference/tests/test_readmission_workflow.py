"""The readmission workflow and the KServe v2 adapter, with the EHR and the model server at the transport
boundary (httpx.MockTransport). tests/integration/test_model_servers.py runs them against real MLServer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ehrflow_contracts import DraftProposed, InferenceOutcome
from ehrflow_devstack.mock_fhir import MockFhir, event_about
from ehrflow_inference.enabled import Enabled, contract_for
from ehrflow_inference.models import Guarded, InvalidModelOutput, Models, ModelUnavailable
from ehrflow_inference.models.kserve import kserve_v2, tensor
from ehrflow_inference.pipeline import Result, evaluate
from ehrflow_inference.workflows.readmission import Readmission
from ehrflow_runtime.organizations import Organization

READMISSION = Readmission()
CONTRACT = contract_for(READMISSION, {}, source=READMISSION.contract_file, org=None)
END = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
IMP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}


def stay(patient: str, start: datetime, end: datetime, status: str = "finished") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": IMP,
        "subject": {"reference": patient},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
    }


def chart(ehr: MockFhir, patient: str = "Patient/p1") -> dict[str, Any]:
    """A 72-year-old with two earlier stays this year (one over a year ago), 3 conditions, 4 medications."""
    ehr.add({"resourceType": "Patient", "id": patient.split("/")[1], "birthDate": "1954-06-01"})
    ehr.add(stay(patient, END - timedelta(days=100), END - timedelta(days=96)))
    ehr.add(stay(patient, END - timedelta(days=30), END - timedelta(days=29)))
    ehr.add(stay(patient, END - timedelta(days=500), END - timedelta(days=490)))
    for _ in range(3):
        ehr.add({"resourceType": "Condition", "subject": {"reference": patient}, "code": {"text": "x"}})
    for _ in range(4):
        ehr.add({"resourceType": "MedicationRequest", "subject": {"reference": patient}, "status": "active"})
    index = stay(patient, END - timedelta(days=5), END)
    ehr.add(index)
    return index


class ModelServer:
    """A KServe v2 endpoint at the transport boundary: records requests, answers in turn."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def proba(p: float) -> httpx.Response:
    return httpx.Response(
        200, json={"outputs": [{"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "data": [1 - p, p]}]}
    )


async def _run(ehr: MockFhir, org: Organization, server: ModelServer, resource: dict[str, Any]) -> list[Result]:
    models = Models(httpx.AsyncClient(transport=httpx.MockTransport(server)))
    return await evaluate(event_about(resource), [Enabled(READMISSION, CONTRACT)], lambda f: ehr.client(org, f), models)


async def test_a_finished_stay_drafts_the_risk_from_the_model(organization: Organization) -> None:
    ehr, server = MockFhir(), ModelServer(proba(0.42))
    [result] = await _run(ehr, organization, server, chart(ehr))
    draft = result.event
    assert isinstance(draft, DraftProposed) and draft.workflow == "readmission" and draft.feature == "readmission"
    [request] = server.requests
    assert request.url.path == "/v2/models/readmission-risk/versions/1.0.0/infer"
    body = json.loads(request.content)
    [features] = body["inputs"]
    age = (END - datetime(1954, 6, 1, tzinfo=UTC)).days / 365.25
    assert features["shape"] == [1, 5] and features["datatype"] == "FP64"
    assert features["data"] == pytest.approx([age, 2, 5, 3, 4])
    assert body["outputs"] == [{"name": "predict_proba"}]
    prediction = draft.resource["prediction"][0]
    assert prediction["probabilityDecimal"] == 0.42 and prediction["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert draft.summary["admissions_12m"] == 2 and draft.summary["band"] == "high"


async def test_a_later_stay_supersedes_and_an_open_one_does_not_trigger(organization: Organization) -> None:
    ehr, server = MockFhir(), ModelServer(proba(0.1))
    index = chart(ehr)
    ehr.add(stay("Patient/p1", END + timedelta(days=2), END + timedelta(days=4)))
    [result] = await _run(ehr, organization, server, index)
    assert isinstance(result.event, InferenceOutcome) and result.event.outcome == "superseded"
    assert await _run(ehr, organization, server, {**index, "status": "in-progress"}) == []
    assert server.requests == []


@pytest.mark.parametrize(
    ("answers", "error", "calls"),
    [
        ((httpx.Response(429, headers={"Retry-After": "0"}), proba(0.2)), None, 2),
        ((httpx.Response(503), httpx.Response(502), httpx.Response(500)), ModelUnavailable, 3),
        ((httpx.Response(400, json={"error": "bad shape"}),), InvalidModelOutput, 1),
        ((httpx.Response(200, json={"predictions": [0.2]}),), InvalidModelOutput, 1),
        ((httpx.Response(200, text="<html>"),), InvalidModelOutput, 1),
    ],
)
async def test_the_adapter_retries_what_may_pass_and_refuses_the_rest(
    answers: tuple[httpx.Response, ...], error: type[Exception] | None, calls: int
) -> None:
    server = ModelServer(*answers)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    guarded = Guarded(CONTRACT.model, kserve_v2(CONTRACT.model, http), backoff_s=0)
    if error is None:
        assert (await guarded.predict({"input-0": [1.0, 2.0]}))["predict_proba"] == [0.8, 0.2]
    else:
        with pytest.raises(error):
            await guarded.predict({"input-0": [1.0, 2.0]})
    assert len(server.requests) == calls


async def test_the_endpoint_credential_is_read_from_its_file(tmp_path: Any) -> None:
    secret = tmp_path / "model-key"
    secret.write_text("k-1\n")
    spec = CONTRACT.model.model_copy(update={"credentials_file": secret})
    server = ModelServer(proba(0.2))
    await kserve_v2(spec, httpx.AsyncClient(transport=httpx.MockTransport(server)))({"x": [1]})
    secret.write_text("k-2\n")  # rotated: the next call uses the new one
    await kserve_v2(spec, httpx.AsyncClient(transport=httpx.MockTransport(server)))({"x": [1]})
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer k-1", "Bearer k-2"]


def test_tensors_are_rows_of_fp64() -> None:
    assert tensor("a", [1, 2]) == {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}
    assert tensor("a", [[1, 2], [3, 4]])["shape"] == [2, 2]
    with pytest.raises(InvalidModelOutput, match="rows of different lengths"):
        tensor("a", [[1, 2], [3]])
