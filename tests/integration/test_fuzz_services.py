"""Every HTTP surface of every service, fuzzed on the running stack: no input gets a 500.

Two fuzzers, both over real HTTP to the stack's services (real broker, Redis and EHRs behind them):

- schemathesis, from an OpenAPI description of each service's routes (below; ingest serves its own and has
  its documented answers checked in-process by services/ingest/tests/test_openapi.py), generating paths,
  query strings, headers and bodies from the schemas, with valid credentials on a share of the cases so
  they get past the door;
- hypothesis, sending valid-looking requests with one to three values swapped for another JSON type (a
  token request whose ``feature`` is an object, a decision whose ``reviewer`` is a list, a notification
  whose references are numbers): the shapes that raised TypeError or AttributeError as 500.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.fuzzing import wrong_types_inside
from ehrflow_devstack.stack import Stack

# One xdist worker runs this module in order: the last test reads what the fuzzers before it counted.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fuzz-services")]

JSON_BODY = {"content": {"application/json": {"schema": {"type": "object"}}}}
ANY = {"default": {"description": "any answer but a server error"}}


def _param(name: str, where: str = "path") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": {"type": "string"}}


def _op(*params: dict[str, Any], body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"parameters": list(params), "responses": ANY}
    if body:
        op["requestBody"] = {"required": False, **JSON_BODY}
    return op


AUTH_HEADERS = (_param("Authorization", "header"), _param("X-Ehrflow-Service", "header"))
HEALTH = {"/healthz": {"get": _op()}, "/readyz": {"get": _op()}, "/metrics": {"get": _op()}}
ROUTES: dict[str, dict[str, Any]] = {
    "auth": {
        **HEALTH,
        "/orgs/{org}/jwks.json": {"get": _op(_param("org"))},
        "/internal/v1/tokens": {"post": _op(*AUTH_HEADERS, body=True)},
        "/internal/v1/sessions/introspect": {"post": _op(*AUTH_HEADERS, body=True)},
        "/launch/{org}": {"get": _op(_param("org"), _param("iss", "query"), _param("launch", "query"))},
        "/launch/{org}/callback": {
            "get": _op(_param("org"), _param("state", "query"), _param("code", "query"), _param("error", "query"))
        },
        "/v1/session": {"get": _op(_param("Authorization", "header"))},
        "/v1/session/logout": {"post": _op(_param("Authorization", "header"))},
    },
    "writeback": {
        **HEALTH,
        "/v1/orgs/{org}/drafts": {
            "get": _op(_param("org"), _param("status", "query"), _param("Authorization", "header"))
        },
        "/v1/orgs/{org}/drafts/{draft_id}": {
            "get": _op(_param("org"), _param("draft_id"), _param("Authorization", "header"))
        },
        "/v1/orgs/{org}/drafts/{draft_id}/{action}": {
            "post": _op(
                _param("org"), _param("draft_id"), _param("action"), _param("Authorization", "header"), body=True
            )
        },
    },
    "inference": HEALTH,
    "ingest": {**HEALTH, "/openapi.json": {"get": _op()}},
}


def _document(service: str) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": f"ehrflow {service}", "version": "1"}, "paths": ROUTES[service]}


SCHEMAS = {service: schemathesis.openapi.from_dict(_document(service)) for service in ROUTES}
TURNS = itertools.count()
ANSWERED: Counter[tuple[str, int]] = Counter()


def _credentials(stack: Stack, service: str, turn: int) -> dict[str, str]:
    """Every other case carries a credential that opens the door it is knocking on."""
    assert stack.config
    if turn % 2:
        return {}
    if service == "auth":
        credential = stack.config.service_credential("inference")
        return {"Authorization": f"Bearer {credential}", "X-Ehrflow-Service": "inference"}
    if service == "writeback":
        return {"Authorization": f"Bearer {stack.config.review_key('org1')}"}
    return {}


def _fuzz(service: str) -> Any:
    schema = SCHEMAS[service]

    @schema.parametrize()
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def test(case: schemathesis.Case, stack: Stack) -> None:
        turn = next(TURNS)
        if case.path_parameters and "org" in case.path_parameters and turn % 3:
            case.path_parameters = {**case.path_parameters, "org": "org1"}
        case.headers = {**(case.headers or {}), **_credentials(stack, service, turn)}
        response = case.call(base_url=stack.urls[service], timeout=30)
        ANSWERED[(service, response.status_code)] += 1
        assert response.status_code != 500, (case.method, case.formatted_path, response.text[:200])

    return test


test_schemathesis_auth = _fuzz("auth")
test_schemathesis_writeback = _fuzz("writeback")
test_schemathesis_inference = _fuzz("inference")
test_schemathesis_ingest_operations = _fuzz("ingest")


# --- valid-looking requests with wrong JSON types inside ---------------------------------------------------

VALID_BODIES: dict[tuple[str, str], Any] = {
    ("auth", "/internal/v1/tokens"): {"organization": "org1", "feature": "news2", "min_ttl": 60},
    ("auth", "/internal/v1/sessions/introspect"): {"session": "s", "binding": "b"},
    ("writeback", "/v1/orgs/org1/drafts/d1/approve"): {"reviewer": "Practitioner/1", "reason": "r"},
    ("writeback", "/v1/orgs/org1/drafts/d1/reject"): {"reviewer": "Practitioner/1", "reason": "r"},
    ("ingest", "/v1/notify/org1"): samples.subscription_status_bundle(),
}


@pytest.mark.parametrize(("service", "path"), list(VALID_BODIES))
def test_wrong_json_types_inside_valid_requests_are_never_a_500(stack: Stack, service: str, path: str) -> None:
    assert stack.config
    headers = {
        "auth": _credentials(stack, "auth", 0),
        "writeback": _credentials(stack, "writeback", 0),
        "ingest": {WEBHOOK_HEADER: stack.config.webhook_secret("org1"), "Content-Type": "application/fhir+json"},
    }[service]
    answers: Counter[int] = Counter()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=wrong_types_inside(st.just(VALID_BODIES[(service, path)])))
    def send(body: Any) -> None:
        response = httpx.post(f"{stack.urls[service]}{path}", content=json.dumps(body), headers=headers, timeout=30)
        answers[response.status_code] += 1
        assert response.status_code != 500, (body, response.text[:200])

    send()
    assert sum(answers.values()) >= 60 and 500 not in answers


def test_the_fuzzers_got_past_the_doors() -> None:
    """Not every case was refused at authentication: the credentials above opened the routes."""
    statuses = {status for (service, status) in ANSWERED if service in ("auth", "writeback")}
    assert statuses & {200, 400, 403, 404, 409}, ANSWERED
