"""Fuzzing ingest's webhook (hypothesis): no body, header or path makes it answer 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
from ehrflow_devstack.fuzzing import WRONG_TYPES, wrong_types_inside
from ehrflow_devstack.memory_sink import MemorySink
from ehrflow_ingest.main import create_app
from ehrflow_ingest.settings import IngestSettings

ANSWERS = {200, 400, 401, 404, 405, 408, 413, 415}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# Bodies that look like notifications and then go wrong somewhere inside.
notification_like = st.builds(
    lambda kind, params, entries: {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": {"resourceType": "Parameters", "parameter": params}}, *entries],
    },
    st.sampled_from(["history", "subscription-notification", "searchset", "batch"]),
    st.lists(
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(
                    ["subscription", "topic", "status", "type", "events-since-subscription-start", "notification-event"]
                )
            },
            optional={
                "valueString": json_values,
                "valueCode": json_values,
                "valueReference": json_values,
                "part": json_values,
            },
        ),
        max_size=6,
    ),
    st.lists(st.fixed_dictionaries({}, optional={"resource": json_values, "fullUrl": json_values}), max_size=3),
)

VALID = [
    samples.r4_backport(),
    samples.r4_backport("handshake"),
    samples.subscription_status_bundle(),
    samples.subscription_status_bundle(r5=True),
    samples.observation(),
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": samples.observation()}]},
]
"""Every shape ingest accepts, each valid as it stands."""


def wrong_type_inside() -> st.SearchStrategy[Any]:
    """A valid notification with one to three of its values (a reference, a counter, a meta, an entry…)
    swapped for a value of the wrong JSON type: the shapes that raised TypeError/AttributeError as 500."""
    return wrong_types_inside(st.sampled_from(VALID), WRONG_TYPES | json_values)


bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | notification_like.map(lambda v: json.dumps(v).encode())
    | wrong_type_inside().map(lambda v: json.dumps(v).encode())
    | st.just(json.dumps(samples.r4_backport()).encode())
)
content_types = st.sampled_from(
    ["application/fhir+json", "application/json; charset=utf-8", "application/fhir+xml", "text/plain", ""]
)
segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1, max_size=20
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, MemorySink, str]:
    config = generate(tmp_path_factory.mktemp("fuzz"))
    write_registry(config, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
    settings_ = IngestSettings(
        organizations_file=Path(config.organizations_file),
        max_body_bytes=4096,
        kafka={"create_topics": False},
        redis_url="redis://127.0.0.1:1/0",
    )
    sink = MemorySink()
    return create_app(settings_, sink=sink), sink, config.webhook_secret("org1")


def _status(app: tuple[Any, MemorySink, str], method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    asgi, _, _ = app

    async def run() -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi, raise_app_exceptions=False), base_url="http://ingest"
        ) as client:
            return (await client.request(method, path, content=body, headers=headers)).status_code

    return asyncio.run(run())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, content_type=content_types, authenticated=st.booleans())
def test_any_body_gets_a_precise_answer(
    app: tuple[Any, MemorySink, str], body: bytes, content_type: str, authenticated: bool
) -> None:
    headers = {"Content-Type": content_type, **({WEBHOOK_HEADER: app[2]} if authenticated else {})}
    assert _status(app, "POST", "/v1/notify/org1", body, headers) in ANSWERS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=wrong_type_inside())
def test_valid_notifications_with_a_wrong_type_inside_get_a_precise_answer(
    app: tuple[Any, MemorySink, str], body: Any
) -> None:
    """A focus or subscription ``reference`` that is an object, a number or a list answered 500."""
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: app[2]}
    assert _status(app, "POST", "/v1/notify/org1", json.dumps(body).encode(), headers) in ANSWERS


@pytest.mark.parametrize("reference", [{"reference": "Patient/1"}, 7, ["Observation/1"]])
@pytest.mark.parametrize("where", ["focus", "subscription"])
def test_a_reference_of_the_wrong_type_is_not_a_500(
    app: tuple[Any, MemorySink, str], reference: Any, where: str
) -> None:
    """Four cases that answered 500 with a valid secret, kept as plain examples."""
    body = samples.subscription_status_bundle()
    status = body["entry"][0]["resource"]
    if where == "focus":
        status["notificationEvent"][0]["focus"] = {"reference": reference}
    else:
        status["subscription"] = {"reference": reference}
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: app[2]}
    assert _status(app, "POST", "/v1/notify/org1", json.dumps(body).encode(), headers) in {200, 400}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["PUT", "DELETE", "POST", "GET"]), org=segment, rtype=segment, rid=segment, body=bodies)
def test_any_path_gets_a_precise_answer(
    app: tuple[Any, MemorySink, str], method: str, org: str, rtype: str, rid: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: app[2]}
    path = "/v1/notify/" + "/".join(quote(segment, safe="") for segment in (org, rtype, rid))
    assert _status(app, method, path, body, headers) in ANSWERS
