"""Schemathesis against ingest's own OpenAPI document: any path, body and header it can generate gets a
documented answer with an OperationOutcome body, never a 500 (with test_fuzz.py).

Runs the app in-process with an in-memory sink in place of Kafka and no Redis (the transport boundaries);
a third of the cases carry the organization's webhook secret so they get past authentication into parsing.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
from ehrflow_devstack.memory_sink import MemorySink
from ehrflow_ingest.main import create_app
from ehrflow_ingest.settings import IngestSettings


def _app(folder: Path) -> tuple[object, str]:
    config = generate(folder)
    write_registry(config, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
    ingest = IngestSettings(
        organizations_file=config.organizations_file,
        max_body_bytes=4096,
        kafka={"create_topics": False, "publish_timeout_s": 1},
        redis_url="redis://127.0.0.1:1/0",
        background=False,
    )
    return create_app(ingest, sink=MemorySink()), config.webhook_secret("org1")


# One xdist worker runs this module in order: a later test reads what the generated cases counted.
pytestmark = pytest.mark.xdist_group("ingest-openapi")

TURNS = itertools.count()
ANSWERED: Counter[int] = Counter()
schemathesis.serializer.alias("application/json+fhir", "application/json")  # an old FHIR media type EHRs send
APP, SECRET = _app(Path(tempfile.mkdtemp(prefix="ehrflow-openapi-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
"""Not ``positive_data_acceptance``: a body valid for the document's JSON Schema (an object) need not be a
FHIR notification, and ingest rightly answers 400 for most of them."""


@schema.parametrize()
# derandomize: the same cases on every run, so whether they reach every outcome (below) cannot change by chance.
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    turn = next(TURNS) % 3  # as generated; as organization 1's EHR (into parsing); for org1 without its secret
    if turn:
        case.path_parameters = {**(case.path_parameters or {}), "org": "org1"}
    if turn == 1:
        case.headers = {**(case.headers or {}), WEBHOOK_HEADER: SECRET}
    response = case.call_and_validate(checks=CHECKS)
    ANSWERED[response.status_code] += 1


def test_the_generated_cases_reached_every_outcome() -> None:
    """The cases above were not all stopped at the door: some were accepted, some rejected as bad input."""
    assert {200, 400, 401, 404} <= set(ANSWERED), ANSWERED


def test_the_document_lists_every_webhook_route() -> None:
    paths = schema.raw_schema["paths"]
    assert set(paths) == {
        "/v1/notify/{org}",
        "/v1/notify/{org}/{type}/{id}",
        "/v1/notify/{org}/sub/{name}",
        "/v1/notify/{org}/sub/{name}/{type}/{id}",
    }
    with pytest.raises(KeyError):
        paths["/v1/notify/{org}"]["get"]
