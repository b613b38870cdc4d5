"""The webhook's fast path takes only requests that Starlette's routes would give the webhook, with the
same path parameters, and takes every plain one; everything else (404, 405, redirects, health) is left
to Starlette."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Match, Route

from ehrflow_ingest.app import Webhook, routes, webhook_params

WEBHOOK = object.__new__(Webhook)  # matching never calls it
ROUTES = routes(WEBHOOK)
OTHERS = [Route("/healthz", lambda _: None), Route("/readyz", lambda _: None)]


def starlette_match(method: str, path: str) -> tuple[str, dict[str, Any] | None]:
    """What Starlette's router does: the first full match wins, else the first partial one (405), else 404."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    partial = None
    for route in [*ROUTES, *OTHERS]:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return ("webhook", child["path_params"]) if route.endpoint is WEBHOOK else ("other", None)
        if match == Match.PARTIAL and partial is None:
            partial = route
    return ("405", None) if partial is not None else ("404", None)


SEGMENTS = st.sampled_from(["org1", "sub", "vitals", "Observation", "o-1", "", "a b", "é", "_history"])
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])


@given(
    METHODS,
    st.sampled_from(["/v1/notify/", "/v1/notify", "/v1/notifyx/", "/v2/notify/", "/"]),
    st.lists(SEGMENTS, max_size=6),
)
def test_the_fast_path_agrees_with_starlette(method: str, prefix: str, segments: list[str]) -> None:
    path = prefix + "/".join(segments)
    fast = webhook_params(method, path)
    if fast is not None:  # taken: Starlette would have given the webhook the same parameters
        assert starlette_match(method, path) == ("webhook", fast)


def test_every_webhook_route_has_a_fast_path() -> None:
    cases = {
        ("POST", "/v1/notify/org1"): {"org": "org1"},
        ("POST", "/v1/notify/org1/sub/vitals"): {"org": "org1", "name": "vitals"},
        ("PUT", "/v1/notify/org1/Observation/o-1"): {"org": "org1", "type": "Observation", "id": "o-1"},
        ("DELETE", "/v1/notify/org1/sub/vitals/Observation/o-1"): {
            "org": "org1",
            "name": "vitals",
            "type": "Observation",
            "id": "o-1",
        },
        ("PUT", "/v1/notify/org1/sub/vitals"): {"org": "org1", "type": "sub", "id": "vitals"},  # as Starlette
    }
    for (method, path), params in cases.items():
        assert webhook_params(method, path) == params
        assert starlette_match(method, path) == ("webhook", params)


def test_what_is_not_plainly_the_webhooks_is_left_to_starlette() -> None:
    for method, path in [
        ("GET", "/v1/notify/org1"),  # 405
        ("POST", "/v1/notify/org1/Observation/o-1"),  # 405
        ("POST", "/v1/notify/org1/"),  # trailing slash
        ("PUT", "/v1/notify/org1"),  # 405
        ("GET", "/healthz"),
    ]:
        assert webhook_params(method, path) is None
