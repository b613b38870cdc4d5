"""Clinician SMART App Launch, EHR launch and standalone (docs/design/smart.md G1–G8).

``start`` checks ``iss`` against the organization's allow-list before any outbound request, discovers
the authorization server, and returns the authorize redirect plus a cookie binding the ``state``.
``finish`` consumes the state once, checks organization, ``iss`` (RFC 9207) and cookie, exchanges the
code once (PKCE), validates the id_token and launch context, and opens a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from redis.asyncio import Redis

from ehrflow_auth.sessions import Session, SessionStore
from ehrflow_runtime.organizations import Launch, Organization
from ehrflow_runtime.tls import OrganizationClients

STATE_PREFIX = "ehrflow:auth:launch-state:"
RATE_PREFIX = "ehrflow:auth:launch-rate:"
DISCOVERY_TTL_S = 300.0
"""How long an EHR's SMART configuration is reused for launches: starting one is unauthenticated, and
without a cache every start read the document again."""
ID_TOKEN_ALGS = ["RS256", "RS384", "ES256", "ES384"]
CLOCK_LEEWAY_S = 60


class LaunchError(Exception):
    """A launch that must stop; ``reason`` is safe to show and to audit (no secrets, no PHI)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Started:
    authorize_url: str
    cookie_name: str
    cookie_value: str
    cookie_path: str


@dataclass(frozen=True)
class Finished:
    session_id: str
    binding: str
    session: Session
    return_url: str


def canonical(url: str) -> str:
    """Scheme and host in lower case, default port and trailing slash dropped: how ``iss`` is compared."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def state_cookie_name(state: str) -> str:
    return f"ehrflow_launch_{_digest(state)[:16]}"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


PATIENT_ID = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9\-.]{1,64}$")


def session_patient(patient: object, scope: str, config: Launch) -> str | None:
    """The patient a session is bound to: the launch's, as ``Patient/id``. A session is never wider than
    its launch: without a patient it would see every draft of the organization, so a launch that names
    none is refused unless the organization allows patient-less sessions, and always when a patient
    scope was granted (G5)."""
    if patient is None or patient == "":
        if any(s.startswith(("patient/", "launch/patient")) or s == "launch" for s in scope.split()):
            raise LaunchError("a patient scope was granted but the launch named no patient")
        if not config.allow_patientless_sessions:
            raise LaunchError("the launch named no patient, and this organization allows only patient-bound sessions")
        return None
    if not isinstance(patient, str) or not PATIENT_ID.match(patient):
        raise LaunchError("the launch's patient is not a FHIR id")
    return f"Patient/{patient}"


class Launches:
    def __init__(
        self,
        redis: Redis,
        http: httpx.AsyncClient,
        sessions: SessionStore,
        *,
        state_ttl_s: int = 600,
        discovery_ttl_s: float = DISCOVERY_TTL_S,
        clients: OrganizationClients | None = None,
    ) -> None:
        self._redis = redis
        self._clients = clients or OrganizationClients(http)
        self._sessions = sessions
        self._state_ttl = state_ttl_s
        self._discovery_ttl = discovery_ttl_s
        self._discovered: dict[str, tuple[float, dict[str, Any]]] = {}

    async def admit(self, org: Organization) -> bool:
        """Whether another launch may start at ``org`` this minute (counted in Redis, across replicas)."""
        config = self._config(org)
        key = f"{RATE_PREFIX}{org.id}:{int(time.time() // 60)}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        return int(count) <= config.starts_per_minute

    @staticmethod
    def _config(org: Organization) -> Launch:
        if org.launch is None:
            raise LaunchError(f"organization {org.id} has no clinician launch", 404)
        return org.launch

    async def _discover(self, org: Organization, iss: str) -> dict[str, Any]:
        """The issuer's SMART configuration, checked, and reused for ``DISCOVERY_TTL_S`` (allowed issuers
        only reach here, so the cache holds at most one document per configured issuer)."""
        cached = self._discovered.get(iss)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        doc = await self._read_configuration(self._clients.for_org(org), iss)
        self._discovered[iss] = (time.monotonic() + self._discovery_ttl, doc)
        return doc

    @staticmethod
    async def _read_configuration(http: httpx.AsyncClient, iss: str) -> dict[str, Any]:
        try:
            response = await http.get(f"{iss}/.well-known/smart-configuration", headers={"Accept": "application/json"})
            doc: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            raise LaunchError("the EHR's SMART configuration could not be read", 502) from None
        if response.status_code != 200:
            raise LaunchError("the EHR's SMART configuration could not be read", 502)
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(field)
            if not isinstance(value, str) or _origin(value) != _origin(iss):  # G8, A2: the EHR's own host only
                raise LaunchError(f"the EHR's {field} is missing or on another host")
        if "S256" not in (doc.get("code_challenge_methods_supported") or []):
            raise LaunchError("the EHR's authorization server does not offer PKCE S256")
        return doc

    async def start(self, org: Organization, *, iss: str | None, launch: str | None) -> Started:
        config = self._config(org)
        allowed = {canonical(i): i for i in config.issuers}
        if launch is not None and not iss:
            raise LaunchError("an EHR launch needs iss")
        chosen = canonical(iss) if iss else canonical(config.issuers[0])
        if chosen not in allowed:
            raise LaunchError("iss is not an issuer of this organization")  # G1: before any outbound request
        issuer = allowed[chosen].rstrip("/")
        doc = await self._discover(org, issuer)
        state, nonce, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = _pkce()
        scopes = list(config.scopes)
        if launch is None:  # standalone: ask the EHR to pick the patient
            scopes = ["launch/patient" if s == "launch" else s for s in scopes]
        record = {
            "org": org.id,
            "iss": issuer,
            "issuer": doc.get("issuer") or issuer,
            "token_endpoint": doc["token_endpoint"],
            "jwks_uri": doc["jwks_uri"],
            "verifier": verifier,
            "nonce": nonce,
            "binding": _digest(binding),
            "created_at": time.time(),
        }
        await self._redis.set(STATE_PREFIX + _digest(state), json.dumps(record), ex=self._state_ttl)
        params = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": config.redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "aud": issuer,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **({"launch": launch} if launch else {}),
        }
        return Started(
            f"{doc['authorization_endpoint']}?{urlencode(params)}",
            state_cookie_name(state),
            binding,
            urlsplit(config.redirect_uri).path,
        )

    async def finish(self, org: Organization, query: dict[str, str], cookies: dict[str, str]) -> Finished:
        config = self._config(org)
        if query.get("error"):
            raise LaunchError(f"the EHR refused the launch ({query['error'][:64]})")
        state = query.get("state")
        if not state:
            raise LaunchError("state is missing")
        raw = await self._redis.getdel(STATE_PREFIX + _digest(state))  # G3: single use, atomically
        if raw is None:
            raise LaunchError("state is unknown, already used or expired")
        record = json.loads(raw)
        if record["org"] != org.id:
            raise LaunchError("state belongs to another organization")  # G7 mix-up defence
        if query.get("iss") and canonical(query["iss"]) not in (canonical(record["iss"]), canonical(record["issuer"])):
            raise LaunchError("iss does not match the authorization server the launch went to")  # RFC 9207
        binding = cookies.get(state_cookie_name(state), "")
        if not hmac.compare_digest(_digest(binding), record["binding"]):
            raise LaunchError("the launch cookie is missing or does not match")
        code = query.get("code")
        if not code:
            raise LaunchError("code is missing")
        http = self._clients.for_org(org)
        token = await self._exchange(http, config, record, code)
        claims = await self._id_token_claims(http, config, record, token.get("id_token"))
        user = self._fhir_user(record["iss"], claims.get("fhirUser"))
        scope = str(token.get("scope", ""))
        patient = session_patient(token.get("patient"), scope, config)
        now = time.time()
        session = Session(
            organization_id=org.id,
            iss=record["iss"],
            patient=patient,
            user=user,
            scope=scope,
            created_at=now,
            expires_at=now + config.session_ttl_s,
            roles=config.roles.of(user, claims),
        )
        session_id, session_binding = await self._sessions.create(session)
        return Finished(session_id, session_binding, session, config.return_url)

    @staticmethod
    async def _exchange(http: httpx.AsyncClient, config: Launch, record: dict[str, Any], code: str) -> dict[str, Any]:
        """G4: only at the stored token endpoint, same redirect_uri, the PKCE verifier; never retried."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": config.redirect_uri,
            "code_verifier": record["verifier"],
            "client_id": config.client_id,
        }
        try:
            response = await http.post(record["token_endpoint"], data=form, headers={"Accept": "application/json"})
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            raise LaunchError("the code exchange failed", 502) from None
        if (
            response.status_code != 200
            or not body.get("access_token")
            or str(body.get("token_type", "")).lower() != "bearer"
        ):
            raise LaunchError(f"the code exchange was refused ({body.get('error', response.status_code)})", 502)
        return body

    @staticmethod
    async def _id_token_claims(
        http: httpx.AsyncClient, config: Launch, record: dict[str, Any], id_token: object
    ) -> dict[str, Any]:
        """G5: signature (issuer's JWKS, allowed algorithms), iss, aud, exp and nonce."""
        if not isinstance(id_token, str):
            raise LaunchError("no id_token was returned")
        try:
            jwks = (await http.get(record["jwks_uri"])).json()
            decoded = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=ID_TOKEN_ALGS)
        except (httpx.HTTPError, ValueError, JoseError):
            raise LaunchError("the id_token signature is not valid") from None
        claims = decoded.claims
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if canonical(str(claims.get("iss", ""))) != canonical(record["issuer"]):
            raise LaunchError("the id_token issuer is not the authorization server")
        if config.client_id not in audiences:
            raise LaunchError("the id_token is not for this client")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < time.time() - CLOCK_LEEWAY_S:
            raise LaunchError("the id_token has expired")
        if not hmac.compare_digest(str(claims.get("nonce", "")), record["nonce"]):
            raise LaunchError("the id_token nonce does not match")
        return claims

    @staticmethod
    def _fhir_user(iss: str, fhir_user: object) -> str:
        """``fhirUser`` as ``Type/id``; it must live inside the organization's FHIR base (G5)."""
        if not isinstance(fhir_user, str) or not fhir_user:
            raise LaunchError("the id_token has no fhirUser")
        base = canonical(iss) + "/"
        absolute = canonical(fhir_user)
        relative = absolute[len(base) :] if absolute.startswith(base) else fhir_user
        if (
            "://" in relative
            or relative.count("/") != 1
            or relative.split("/")[0] not in ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "Person")
        ):
            raise LaunchError("fhirUser is not a user of this organization's FHIR server")
        return relative
