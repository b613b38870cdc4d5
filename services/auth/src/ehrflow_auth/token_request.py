"""The client_credentials token request to an EHR, with SMART's error handling (smart-auth.md D)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import httpx

from ehrflow_auth.assertion import ASSERTION_TYPE, client_assertion
from ehrflow_auth.keys import Key
from ehrflow_runtime.errors import ConfigurationError, UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization

log = logging.getLogger("ehrflow.auth.audit")

DEFAULT_LIFETIME_S = 300
"""Lifetime assumed when the EHR sends no ``expires_in``."""


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def parse_token_response(org_id: str, body: object, requested_scope: str) -> IssuedToken:
    """Accept only a non-empty access token of type bearer (any case); keep the granted scope."""
    if not isinstance(body, dict):
        raise UpstreamRejected(f"{org_id}: token response is not a JSON object", status=502)
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise UpstreamRejected(f"{org_id}: token response has no access_token", status=502)
    if str(body.get("token_type", "")).lower() != "bearer":
        raise UpstreamRejected(f"{org_id}: token_type is not bearer", status=502)
    try:
        expires_in = int(float(body.get("expires_in", DEFAULT_LIFETIME_S)))
    except (TypeError, ValueError):
        expires_in = DEFAULT_LIFETIME_S
    return IssuedToken(token, max(1, expires_in), str(body.get("scope") or requested_scope))


async def request_token(
    http: httpx.AsyncClient, org: Organization, key: Key, token_endpoint: str, *, attempts: int = 3
) -> IssuedToken:
    """Ask the EHR for a token. Every attempt signs a new assertion (a ``jti`` is never reused).

    ``invalid_client`` gets one more try with a fresh assertion (covers a key rotation in flight);
    5xx, 429 and timeouts back off with jitter; other OAuth errors are configuration errors.
    """
    scope = " ".join(org.backend_auth.scopes)
    invalid_client_retried = False
    for attempt in range(1, attempts + 1):
        assertion, jti = client_assertion(client_id=org.backend_auth.client_id, token_endpoint=token_endpoint, key=key)
        form = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        started = time.perf_counter()
        try:
            response = await http.post(token_endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            failure: Exception = UpstreamUnavailable(f"{org.id}: token endpoint unreachable ({type(exc).__name__})")
        else:
            audit = {
                "org": org.id,
                "kid": key.kid,
                "jti": jti,
                "status": response.status_code,
                "attempt": attempt,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            if response.status_code == 200:
                try:
                    issued = parse_token_response(org.id, response.json(), scope)
                except ValueError:
                    raise UpstreamRejected(f"{org.id}: token response is not JSON", status=502) from None
                log.info("token issued", extra={**audit, "expires_in": issued.expires_in})
                return issued
            error = _oauth_error(response)
            log.warning("token refused", extra={**audit, "oauth_error": error})
            if error == "invalid_client" and not invalid_client_retried:
                invalid_client_retried = True
                continue
            if response.status_code in (400, 401, 403):
                raise ConfigurationError(
                    f"{org.id}: token endpoint refused the client ({error or response.status_code})"
                )
            failure = UpstreamUnavailable(f"{org.id}: token endpoint answered {response.status_code}")
            retry_after = response.headers.get("Retry-After")
            if response.status_code == 429 and retry_after and retry_after.isdigit():
                await asyncio.sleep(min(float(retry_after), 5.0))
                continue
        if attempt < attempts:
            await asyncio.sleep(min(0.2 * 2**attempt, 2.0) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
    raise failure


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
