"""A counting SMART token endpoint for tests and benchmarks: ``python -m ehrflow_devstack.token_server PORT``.

Serves discovery at ``/fhir/.well-known/smart-configuration`` and ``POST /auth/token`` (client
credentials; the assertion is decoded without verification, its ``jti`` recorded), answering after
``--delay`` seconds so concurrent callers overlap. ``GET /stats`` reports what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _jti(assertion: str) -> str | None:
    try:
        payload = assertion.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims.get("jti")


def create_app(port: int, delay_s: float, expires_in: int) -> Starlette:
    seen: dict[str, Any] = {"token_requests": 0, "discovery_requests": 0, "jtis": []}

    async def discovery(_: Request) -> JSONResponse:
        seen["discovery_requests"] += 1
        return JSONResponse(
            {
                "token_endpoint": f"http://127.0.0.1:{port}/auth/token",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            }
        )

    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        seen["token_requests"] += 1
        seen["jtis"].append(_jti(str(form.get("client_assertion", ""))))
        await asyncio.sleep(delay_s)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": form.get("scope", ""),
            }
        )

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(seen)

    return Starlette(
        routes=[
            Route("/fhir/.well-known/smart-configuration", discovery),
            Route("/auth/token", token, methods=["POST"]),
            Route("/stats", stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--expires-in", type=int, default=300)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.port, args.delay, args.expires_in), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
