"""``/healthz`` (the process runs), ``/readyz`` (its dependencies answer) and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[bool]]


def health_routes(
    checks: Mapping[str, ReadinessCheck], optional: Mapping[str, ReadinessCheck] | None = None
) -> list[Route]:
    """``checks`` decide readiness; ``optional`` ones are reported without failing it (degraded, serving)."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        results = {name: await check() for name, check in checks.items()}
        extra = {name: await check() for name, check in (optional or {}).items()}
        ok = all(results.values())
        status = ("ready" if all(extra.values()) else "degraded") if ok else "not-ready"
        return JSONResponse({"status": status, "checks": {**results, **extra}}, 200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
