"""HTTP surface of the auth service: the public JWKS per organization and the internal token API."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ehrflow_auth.audit import Auditor
from ehrflow_auth.live import LiveConfig
from ehrflow_auth.policy import ServicePolicy
from ehrflow_auth.service import TokenService
from ehrflow_runtime.errors import ConfigurationError, EhrflowError

JWKS_MAX_AGE_S = 300


class TokenRequest(BaseModel):
    organization: str
    feature: str = Field(description="The feature of the organization the token is for; its scopes are granted.")
    min_ttl: float = Field(default=60.0, ge=0, le=3600)
    rejected_token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Digest of a token the EHR refused (401): not again."
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def routes(live: LiveConfig, tokens: TokenService, policy: ServicePolicy, auditor: Auditor) -> list[Route]:
    async def jwks_endpoint(request: Request) -> Response:
        org_id = request.path_params["org"]
        if org_id not in live.registry:
            return _error(404, "unknown organization")
        return JSONResponse(
            live.keys.public_jwks(org_id),
            headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
            media_type="application/jwk-set+json",
        )

    async def token_endpoint(request: Request) -> Response:
        service = request.headers.get("x-ehrflow-service")

        async def refuse(
            status: int, message: str, reason: str, org: str | None = None, feature: str | None = None
        ) -> JSONResponse:
            details = {"reason": reason, "feature": feature}
            await auditor.record("token.refused", organization=org, actor=service, outcome="failure", details=details)
            return _error(status, message)

        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        grant = policy.authenticate(service, presented) if scheme.lower() == "bearer" else None
        if grant is None:
            return await refuse(401, "service authentication required", "unauthenticated")
        try:
            body = TokenRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, f"invalid request: {exc.errors()[0]['loc']}")
        org = live.registry.get(body.organization)
        if org is None:
            return _error(404, "unknown organization")
        feature = body.feature
        if feature not in org.features:
            message = f"feature '{feature}' is not enabled for organization {org.id}"
            return await refuse(403, message, "feature not enabled", org.id, feature)
        if not grant.allows(org.id, feature):
            message = f"service '{service}' may not get '{feature}' tokens for organization {org.id}"
            return await refuse(403, message, "not allowed by policy", org.id, feature)
        try:
            granted = await tokens.token(org, feature, min_ttl=body.min_ttl, reject=body.rejected_token_sha256)
        except ConfigurationError as exc:
            return await refuse(502, f"organization {org.id} is misconfigured", str(exc), org.id, feature)
        except EhrflowError as exc:
            return await refuse(502, f"could not obtain a token for organization {org.id}", str(exc), org.id, feature)
        auditor.served(org.id, service or "-", feature)
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
