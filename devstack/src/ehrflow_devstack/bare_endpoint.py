"""The benchmarks' baseline: a Starlette route that answers like the endpoint under test, doing nothing.

``python -m ehrflow_devstack.bare_endpoint PORT`` serves ``POST /bare`` with uvicorn, as the services are
served (same ASGI server, same framework, one worker), so a ratio to it measures ehrflow's own work.
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ehrflow_runtime.serve import run_asgi

BODY = {"access_token": "x" * 43, "token_type": "bearer", "expires_at": 1.0, "scope": "system/*.read"}


async def bare(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(BODY, headers={"Cache-Control": "no-store"})


app = Starlette(routes=[Route("/bare", bare, methods=["GET", "POST"])])

if __name__ == "__main__":
    run_asgi(app, host="127.0.0.1", port=int(sys.argv[1]))
