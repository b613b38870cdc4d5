"""Process-level helpers: one HTTP client per process, and running an ASGI app."""

from __future__ import annotations

import httpx
import uvicorn
from starlette.types import ASGIApp


def make_http_client(timeout_s: float = 10.0) -> httpx.AsyncClient:
    """The process's one outbound HTTP client, with explicit timeouts."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )


def run_asgi(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn, using our logging configuration rather than uvicorn's."""
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on", server_header=False)
