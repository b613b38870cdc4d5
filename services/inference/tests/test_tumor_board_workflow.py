"""The tumor-board summary workflow and the OpenAI-compatible adapter, with the EHR and the model server at
the transport boundary. tests/integration/test_model_servers.py runs them against llama.cpp's real server."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import httpx2
import pytest

from ehrflow_contracts import DraftProposed, InferenceOutcome
from ehrflow_devstack.mock_fhir import MockFhir, event_about
from ehrflow_inference.enabled import Enabled, contract_for
from ehrflow_inference.models import Models
from ehrflow_inference.pipeline import Result, evaluate
from ehrflow_inference.workflows.tumor_board import TumorBoard, answer_schema
from ehrflow_inference.workflows.tumor_board.record import line, note_text, text_of
from ehrflow_runtime.organizations import Organization

TUMOR_BOARD = TumorBoard()
TASK_CODE = {"system": "https://ehrflow.dev/fhir/CodeSystem/tasks", "code": "tumor-board-preparation"}


def _contract(**override: Any) -> Any:
    return contract_for(TUMOR_BOARD, override, source=TUMOR_BOARD.contract_file, org=None)


def task(patient: str = "Patient/p1") -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": "tb-1",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [TASK_CODE]},
        "for": {"reference": patient},
    }


def chart(ehr: MockFhir, patient: str = "Patient/p1") -> dict[str, Any]:
    ehr.add(
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": {"reference": patient},
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"text": "Invasive ductal carcinoma of left breast, T2N1M0"},
        },
        {
            "resourceType": "DocumentReference",
            "id": "n1",
            "status": "current",
            "subject": {"reference": patient},
            "type": {"text": "Pathology note"},
            "content": [
                {
                    "attachment": {
                        "contentType": "text/html",
                        "data": base64.b64encode(b"<p>ER <b>positive</b></p><script>x()</script>").decode(),
                    }
                }
            ],
        },
    )
    trigger = task(patient)
    ehr.add(trigger)
    return trigger


class ChatServer:
    """An OpenAI-compatible endpoint at the transport boundary: answers ``content`` and records the request."""

    def __init__(self, content: dict[str, Any]) -> None:
        self.content = content
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        message = {"role": "assistant", "content": json.dumps(self.content)}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            },
        )


async def _run(ehr: MockFhir, org: Organization, server: ChatServer, **override: Any) -> list[Result]:
    def handle(request: httpx2.Request) -> httpx2.Response:
        answer = server(httpx.Request(request.method, str(request.url), content=request.read()))
        return httpx2.Response(answer.status_code, json=answer.json())

    models = Models(openai_http=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)))
    contract = _contract(**override)
    return await evaluate(
        event_about(chart(ehr)), [Enabled(TUMOR_BOARD, contract)], lambda f: ehr.client(org, f), models
    )


async def test_a_summary_citing_the_record_is_drafted_as_a_document(organization: Organization) -> None:
    ehr = MockFhir()
    server = ChatServer(
        {
            "statements": [
                {"text": "T2N1M0 breast cancer, ER positive.", "sources": ["Condition/c1", "DocumentReference/n1"]}
            ]
        }
    )
    [result] = await _run(ehr, organization, server)
    draft = result.event
    assert isinstance(draft, DraftProposed) and draft.resource["resourceType"] == "DocumentReference"
    text = base64.b64decode(draft.resource["content"][0]["attachment"]["data"]).decode()
    assert text == "- T2N1M0 breast cancer, ER positive. [Condition/c1, DocumentReference/n1]"
    assert draft.resource["docStatus"] == "preliminary"
    assert [r["reference"] for r in draft.resource["context"]["related"]] == ["Condition/c1", "DocumentReference/n1"]
    [request] = server.requests
    record = request["messages"][1]["content"]
    assert "[Condition/c1] Condition: Invasive ductal carcinoma" in record and "ER positive" in record
    assert "x()" not in record  # the note's script is not text
    sources = request["response_format"]["json_schema"]["schema"]["properties"]["statements"]["items"]
    assert sources["properties"]["sources"]["items"] == {"enum": ["Condition/c1", "DocumentReference/n1"]}


async def test_a_statement_citing_anything_else_is_an_outcome(organization: Organization) -> None:
    ehr = MockFhir()
    server = ChatServer({"statements": [{"text": "Invented.", "sources": ["Condition/elsewhere"]}]})
    [result] = await _run(ehr, organization, server)
    assert isinstance(result.event, InferenceOutcome) and result.event.outcome == "invalid-model-output"
    assert "Invented" not in result.event.detail


async def test_a_record_over_its_budget_is_an_outcome_and_never_sent(organization: Organization) -> None:
    ehr = MockFhir()
    ehr.add(
        {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"}, "code": {"text": "y" * 600}}
    )
    server = ChatServer({"statements": []})
    [result] = await _run(ehr, organization, server, parameters={"max_record_chars": 500})
    assert isinstance(result.event, InferenceOutcome) and result.event.outcome == "budget-exceeded"
    assert "allows 500" in result.event.detail and server.requests == []


def test_record_lines_and_note_text() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"code": "718-7", "display": "Hemoglobin"}]},
        "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": 11.2, "unit": "g/dL"},
    }
    assert line(observation) == "[Observation/o1] Observation: Hemoglobin (final, 2026-11-01): 11.2 g/dL"
    assert text_of("text/html; charset=utf-8", b"<h1>A</h1>\n<style>p{}</style><p>B  C</p>") == "A B C"


async def test_a_note_by_url_is_read_only_under_the_organization_base(organization: Organization) -> None:
    ehr = MockFhir()
    ehr.add(
        {"resourceType": "Binary", "id": "b1", "contentType": "text/plain", "data": base64.b64encode(b"hi").decode()}
    )
    fhir = ehr.client(organization)
    inside = {"content": [{"attachment": {"contentType": "text/plain", "url": f"{ehr.base}/Binary/b1"}}]}
    outside = {"content": [{"attachment": {"contentType": "text/plain", "url": "https://elsewhere.example/Binary/b1"}}]}
    assert await note_text(inside, fhir) == "hi"
    assert await note_text(outside, fhir) is None
    assert all(r.url.host != "elsewhere.example" for r in ehr.requests)


def test_the_schema_narrows_sources_to_the_record() -> None:
    schema = answer_schema(_contract().model.output_schema, ["Condition/c1"])
    assert schema["properties"]["statements"]["items"]["properties"]["sources"]["items"] == {"enum": ["Condition/c1"]}
    assert _contract().model.output_schema["properties"]["statements"]["items"]["properties"]["sources"]["items"] == {
        "type": "string"
    }  # the contract's own schema is untouched


@pytest.mark.parametrize("kind", ["Task", "Appointment"])
def test_a_task_or_an_appointment_triggers(kind: str) -> None:
    if kind == "Task":
        resource = task()
        contract = _contract()
    else:
        resource = {"resourceType": "Appointment", "serviceType": [{"coding": [TASK_CODE]}], "participant": []}
        contract = _contract(trigger={"resource_type": "Appointment"})
    assert TUMOR_BOARD.is_trigger(resource, contract)
    assert not TUMOR_BOARD.is_trigger({**resource, "code": None, "serviceType": []}, contract)
