"""The few lines a route needs when it speaks ASGI itself rather than through Starlette's Request/Response.

Only hot paths do (the auth service's cached-token answer is on every FHIR call ehrflow makes): Starlette's
request and response objects cost about as much per request as the route's own work there. Such a route is
still mounted with ``starlette.routing.Route`` (method checks, 405) inside the app (exception handlers, so
a Redis failure is still a 503).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic_core import to_json
from starlette.types import Receive, Scope, Send


class BodyTooLarge(Exception):
    """The request body exceeds the route's limit (answer 413)."""


class Disconnected(Exception):
    """The client went away before its body arrived (nobody to answer)."""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI servers give them), decoded as Latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def request_headers(scope: Scope) -> dict[str, str]:
    """Every header by lower-case name (the first value where one is repeated), decoded as Latin-1: for a
    route that reads several, one pass instead of a scan per header."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        headers.setdefault(bytes(key).decode("latin-1").lower(), bytes(value).decode("latin-1"))
    return headers


async def read_body(receive: Receive, limit: int, *, declared_length: str | None = None) -> bytes:
    """The whole body, refused as soon as it (or ``declared_length``, the Content-Length header) exceeds
    ``limit`` bytes."""
    declared = declared_length
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_body(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``status`` with ``body`` (already rendered) of ``content_type``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``status`` with ``payload`` as compact JSON."""
    await send_body(send, status, to_json(payload), b"application/json", headers)
