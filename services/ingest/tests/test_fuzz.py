"""Fuzzing ingest's webhook (hypothesis): no body, header or path makes it answer 500 (issue 4)."""

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
from ehrflow_devstack.memory_sink import MemorySink
from ehrflow_ingest.main import create_app
from ehrflow_ingest.settings import IngestSettings

ANSWERS = {200, 400, 401, 404, 405, 413, 415}

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
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | notification_like.map(lambda v: json.dumps(v).encode())
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["PUT", "DELETE", "POST", "GET"]), org=segment, rtype=segment, rid=segment, body=bodies)
def test_any_path_gets_a_precise_answer(
    app: tuple[Any, MemorySink, str], method: str, org: str, rtype: str, rid: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: app[2]}
    path = "/v1/notify/" + "/".join(quote(segment, safe="") for segment in (org, rtype, rid))
    assert _status(app, method, path, body, headers) in ANSWERS
