"""A dependency failing inside a handler is a 503 OperationOutcome with a reason, never a 500."""

from __future__ import annotations

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ehrflow_runtime.errors import UpstreamUnavailable
from ehrflow_runtime.http_errors import exception_handlers


@pytest.mark.parametrize(
    "error", [MaxConnectionsError("pool"), RedisConnectionError("down"), UpstreamUnavailable("auth"), TimeoutError()]
)
async def test_dependency_failures_are_503(error: Exception) -> None:
    async def failing(_: Request) -> Response:
        raise error

    app = Starlette(routes=[Route("/x", failing)], exception_handlers=dict(exception_handlers()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/x")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["issue"][0]["code"] == "transient"
    assert type(error).__name__ in response.json()["issue"][0]["diagnostics"]
