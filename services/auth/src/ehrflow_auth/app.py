"""HTTP surface of the auth service: the public JWKS per organization and the internal token API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ehrflow_auth.live import LiveConfig
from ehrflow_auth.policy import ServicePolicy
from ehrflow_auth.service import TokenService
from ehrflow_runtime.asgi import BodyTooLarge, Disconnected, header, read_body, send_json
from ehrflow_runtime.audit import Auditor
from ehrflow_runtime.errors import ConfigurationError, EhrflowError

JWKS_MAX_AGE_S = 300
MAX_TOKEN_REQUEST_BYTES = 16 * 1024
NO_STORE = ((b"cache-control", b"no-store"),)


class TokenRequest(BaseModel):
    organization: str
    feature: str = Field(description="The feature of the organization the token is for; its scopes are granted.")
    min_ttl: float = Field(default=60.0, ge=0, le=3600)
    rejected_token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Digest of a token the EHR refused (401): not again."
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class TokenApi:
    """``POST /internal/v1/tokens``: a token for a calling service, as its policy allows.

    Spoken in plain ASGI (``ehrflow_runtime.asgi``): a cached token is what every FHIR call of inference
    and writeback starts with, and Starlette's request and response objects cost as much as the answer.
    """

    def __init__(self, live: LiveConfig, tokens: TokenService, policy: ServicePolicy, auditor: Auditor) -> None:
        self._live, self._tokens, self._policy, self._auditor = live, tokens, policy, auditor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, MAX_TOKEN_REQUEST_BYTES, declared_length=header(scope, b"content-length"))
        except Disconnected:
            return
        except BodyTooLarge:
            await send_json(send, 413, {"error": f"request body over {MAX_TOKEN_REQUEST_BYTES} bytes"})
            return
        status, payload = await self.answer(header(scope, b"x-ehrflow-service"), header(scope, b"authorization"), body)
        await send_json(send, status, payload, NO_STORE)

    async def answer(self, service: str | None, authorization: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one token request."""

        async def refuse(
            status: int, message: str, reason: str, org: str | None = None, feature: str | None = None
        ) -> tuple[int, dict[str, Any]]:
            details = {"reason": reason, "feature": feature}
            await self._auditor.record(
                "token.refused", organization=org, actor=service, outcome="failure", details=details
            )
            return status, {"error": message}

        scheme, _, presented = (authorization or "").partition(" ")
        grant = self._policy.authenticate(service, presented) if scheme.lower() == "bearer" else None
        if grant is None:  # anyone can cause this at any rate: counted, audited as a periodic summary
            self._auditor.count(
                "token.refused",
                organization=None,
                actor=self._policy.known(service),
                outcome="failure",
                reason="unauthenticated",
            )
            return 401, {"error": "service authentication required"}
        try:
            request = TokenRequest.model_validate_json(body)
        except ValidationError as exc:
            return 400, {"error": f"invalid request: {exc.errors()[0]['loc']}"}
        org = self._live.registry.get(request.organization)
        if org is None:
            return 404, {"error": "unknown organization"}
        feature = request.feature
        if feature not in org.features:
            message = f"feature '{feature}' is not enabled for organization {org.id}"
            return await refuse(403, message, "feature not enabled", org.id, feature)
        if not grant.allows(org.id, feature):
            message = f"service '{service}' may not get '{feature}' tokens for organization {org.id}"
            return await refuse(403, message, "not allowed by policy", org.id, feature)
        try:
            granted = await self._tokens.token(
                org, feature, min_ttl=request.min_ttl, reject=request.rejected_token_sha256
            )
        except ConfigurationError as exc:
            return await refuse(502, f"organization {org.id} is misconfigured", str(exc), org.id, feature)
        except EhrflowError as exc:
            return await refuse(502, f"could not obtain a token for organization {org.id}", str(exc), org.id, feature)
        # A cached token handed out again is the hot path: counted (every token issued upstream and every
        # refusal of an authenticated service stays an individual record).
        self._auditor.count("token.served", organization=org.id, actor=service, outcome="success", feature=feature)
        return 200, {
            "access_token": granted.access_token,
            "token_type": "bearer",
            "expires_at": granted.expires_at,
            "scope": granted.scope,
        }


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

    return [
        Route("/orgs/{org}/jwks.json", jwks_endpoint, methods=["GET"]),
        Route("/internal/v1/tokens", TokenApi(live, tokens, policy, auditor), methods=["POST"]),
    ]
