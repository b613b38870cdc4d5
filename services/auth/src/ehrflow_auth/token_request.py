"""The client_credentials token request to an EHR, with SMART's error handling (docs/design/smart.md D)."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from ehrflow_auth.assertion import ASSERTION_TYPE, client_assertion
from ehrflow_auth.keys import Key
from ehrflow_runtime.audit import Auditor, Detail
from ehrflow_runtime.errors import ConfigurationError, UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.settings import read_secret_file
from ehrflow_runtime.tls import failure as tls_failure

DEFAULT_LIFETIME_S = 300
"""Lifetime assumed when the EHR sends no ``expires_in``."""


class RateLimited(UpstreamUnavailable):
    """The token endpoint answered 429: wait ``retry_after_s`` before asking again."""

    retry_after_s: float

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


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


def _client_authentication(
    org: Organization, key: Key | None, token_endpoint: str
) -> tuple[dict[str, str], dict[str, str], str | None]:
    """Form fields, headers and the assertion's jti for one attempt (a new assertion every time)."""
    auth = org.backend_auth
    if auth.method == "client_secret_basic":
        assert auth.client_secret_file is not None  # the registry guarantees it
        secret = read_secret_file(auth.client_secret_file).get_secret_value()
        basic = base64.b64encode(f"{quote(auth.client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()
        return {}, {"Authorization": f"Basic {basic}"}, None
    assert key is not None
    assertion, jti = client_assertion(
        client_id=auth.client_id, audience=auth.assertion_audience or token_endpoint, key=key
    )
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, {}, jti


async def request_token(
    http: httpx.AsyncClient,
    org: Organization,
    key: Key | None,
    token_endpoint: str,
    *,
    scope: str | None,
    attempts: int = 3,
    backoff_s: float = 0.2,
    auditor: Auditor | None = None,
) -> IssuedToken:
    """Ask the EHR for a token. Every attempt signs a new assertion (a ``jti`` is never reused).

    ``invalid_client`` gets one more try with a fresh assertion (covers a key rotation in flight);
    5xx, 429 and timeouts back off with jitter (429 as long as ``Retry-After`` says, up to 5 s here; a
    longer one raises RateLimited so the cache can keep serving a still-valid token); other OAuth errors
    are configuration errors.
    """
    auditor = auditor or Auditor(None, source="auth")
    invalid_client_retried = False
    budget = attempts  # the one retry after invalid_client comes on top of it
    failure: Exception = UpstreamUnavailable(f"{org.id}: token endpoint not reached")
    attempt = 0
    while attempt < budget:
        attempt += 1
        fields, headers, jti = _client_authentication(org, key, token_endpoint)
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {}), **fields}
        started = time.perf_counter()
        try:
            response = await http.post(token_endpoint, data=form, headers={"Accept": "application/json", **headers})
        except httpx.HTTPError as exc:
            why = tls_failure(exc, org)
            failure = UpstreamUnavailable(f"{org.id}: token endpoint unreachable ({why})")
        else:
            audit: dict[str, Detail] = {
                "kid": key.kid if key is not None else None,
                "jti": jti,
                "method": org.backend_auth.method,
                "status": response.status_code,
                "attempt": attempt,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            if response.status_code == 200:
                try:
                    issued = parse_token_response(org.id, response.json(), scope or "")
                except ValueError:
                    raise UpstreamRejected(f"{org.id}: token response is not JSON", status=502) from None
                await auditor.record(
                    "token.issued",
                    organization=org.id,
                    actor=org.backend_auth.client_id,
                    outcome="success",
                    details={**audit, "expires_in": issued.expires_in, "scope": issued.scope},
                )
                return issued
            error = _oauth_error(response)
            await auditor.record(
                "token.refused",
                organization=org.id,
                actor=org.backend_auth.client_id,
                outcome="failure",
                details={**audit, "oauth_error": error},
            )
            if error == "invalid_client" and not invalid_client_retried:
                invalid_client_retried = True
                budget += 1
                continue
            if response.status_code in (400, 401, 403):
                raise ConfigurationError(
                    f"{org.id}: token endpoint refused the client ({error or response.status_code})"
                )
            if response.status_code == 429:
                wait = _retry_after(response)
                if wait > 5.0 or attempt == budget:
                    raise RateLimited(f"{org.id}: token endpoint rate-limited us", retry_after_s=wait)
                await asyncio.sleep(wait)
                continue
            failure = UpstreamUnavailable(f"{org.id}: token endpoint answered {response.status_code}")
        if attempt < budget:
            await asyncio.sleep(min(backoff_s * 2**attempt, 2.0) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
    raise failure


def _retry_after(response: httpx.Response, default: float = 60.0) -> float:
    """``Retry-After`` in seconds (delta form); athenahealth-style limits reset within the minute."""
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
