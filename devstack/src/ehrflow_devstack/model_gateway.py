"""A gateway in front of a real model server or EHR, as Istio, Envoy or an API gateway stands in front of one
in production: it forwards every request over a real connection and, when a test asks, answers the next ones
itself with a status (429 with ``Retry-After``, 503) the way a gateway sheds load, or lets the test act at a
chosen request (``before``). It counts what reached it.

Runs in the test's event loop (aiohttp's server); ``url`` is what the adapter is pointed at.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from aiohttp import web

from ehrflow_devstack.processes import free_port

FORWARDED = ("content-type", "authorization", "accept", "prefer", "if-none-exist", "if-match")


@dataclass
class Gateway:
    upstream: str
    refuse_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """``(status, headers)`` to answer the next requests with, one each, before forwarding again."""
    refuse_when: Callable[[bytes], int | None] | None = None
    """A status to answer every request whose body this picks out with (a model that always fails for it)."""
    before: Callable[[web.Request], Awaitable[int | None]] | None = None
    """Called with each request before it is forwarded; a status it returns is answered instead."""
    received: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _http: httpx.AsyncClient | None = None

    async def start(self) -> Gateway:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._http = httpx.AsyncClient(timeout=120)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.aclose()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        body = await request.read()
        if self.before is not None and (answer := await self.before(request)) is not None:
            return web.json_response({"error": "answered by the gateway"}, status=answer)
        status = self.refuse_when(body) if self.refuse_when else None
        if self.refuse_next or status:
            status, headers = self.refuse_next.pop(0) if self.refuse_next else (status or 503, {})
            return web.json_response({"error": "shed by the gateway"}, status=status, headers=headers)
        assert self._http is not None
        upstream = await self._http.request(
            request.method,
            f"{self.upstream}{request.rel_url}",
            content=body,
            headers={k: v for k, v in request.headers.items() if k.lower() in FORWARDED},
        )
        return web.Response(
            status=upstream.status_code,
            body=upstream.content,
            content_type=upstream.headers.get("content-type", "").split(";")[0] or None,
            headers={k: v for k, v in upstream.headers.items() if k.lower() in ("location", "retry-after", "etag")},
        )
