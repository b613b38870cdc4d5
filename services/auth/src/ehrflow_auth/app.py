"""HTTP surface of the auth service: the public JWKS per organization and the internal token API."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ehrflow_auth.service import ServiceCredentials, TokenService
from ehrflow_runtime.errors import ConfigurationError, EhrflowError, UpstreamRejected
from ehrflow_runtime.organizations import Registry

audit = logging.getLogger("ehrflow.auth.audit")

JWKS_MAX_AGE_S = 300


class TokenRequest(BaseModel):
    organization: str
    min_ttl: float = Field(default=60.0, ge=0, le=3600)
    rejected_token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Digest of a token the EHR refused (401): not again."
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def routes(registry: Registry, tokens: TokenService, credentials: ServiceCredentials, jwks) -> list[Route]:  # type: ignore[no-untyped-def]
    async def jwks_endpoint(request: Request) -> Response:
        org_id = request.path_params["org"]
        if org_id not in registry:
            return _error(404, "unknown organization")
        return JSONResponse(
            jwks(org_id),
            headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
            media_type="application/jwk-set+json",
        )

    async def token_endpoint(request: Request) -> Response:
        service = request.headers.get("x-ehrflow-service")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.verify(service, presented):
            audit.warning("internal token request refused", extra={"service": service, "reason": "unauthenticated"})
            return _error(401, "service authentication required")
        try:
            body = TokenRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, f"invalid request: {exc.errors()[0]['loc']}")
        org = registry.get(body.organization)
        if org is None:
            return _error(404, "unknown organization")
        try:
            granted = await tokens.token(org, min_ttl=body.min_ttl, reject=body.rejected_token_sha256)
        except ConfigurationError as exc:
            audit.error("token unavailable", extra={"service": service, "org": org.id, "reason": str(exc)})
            return _error(502, f"organization {org.id} is misconfigured")
        except (UpstreamRejected, EhrflowError) as exc:
            audit.error("token unavailable", extra={"service": service, "org": org.id, "reason": str(exc)})
            return _error(502, f"could not obtain a token for organization {org.id}")
        audit.info("token served", extra={"service": service, "org": org.id})
        return JSONResponse(
            {
                "access_token": granted.access_token,
                "token_type": "bearer",
                "expires_at": granted.expires_at,
                "scope": granted.scope,
            },
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/orgs/{org}/jwks.json", jwks_endpoint, methods=["GET"]),
        Route("/internal/v1/tokens", token_endpoint, methods=["POST"]),
    ]
