"""Clinician sessions as other services see them: the cookie that binds a session, and introspection.

The auth service issues sessions (one per SMART launch); a page holds the session id and sends it as
``Authorization: Bearer <id>`` with the browser's binding cookie. Services ask auth who it belongs to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from ehrflow_runtime.errors import UpstreamUnavailable

INTROSPECT_PATH = "/internal/v1/sessions/introspect"


def session_cookie_name(session_id: str) -> str:
    """A cookie per session, so a second launch in the same browser does not overwrite the first."""
    return f"ehrflow_session_{hashlib.sha256(session_id.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class SessionInfo:
    organization: str
    patient: str | None
    user: str
    roles: tuple[str, ...] = ()


class SessionClient:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, service_name: str, credential: SecretStr) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + INTROSPECT_PATH
        self._headers = {"Authorization": f"Bearer {credential.get_secret_value()}", "X-Ehrflow-Service": service_name}

    async def introspect(self, session_id: str, binding: str) -> SessionInfo | None:
        """The session's organization, patient and user; None when it is not an active session."""
        try:
            response = await self._http.post(
                self._url, json={"session": session_id, "binding": binding}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"auth service unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise UpstreamUnavailable(f"session introspection answered {response.status_code}")
        body = response.json()
        if not body.get("active"):
            return None
        roles = tuple(r for r in body.get("roles") or () if isinstance(r, str))
        return SessionInfo(
            organization=body["organization"], patient=body.get("patient"), user=body["user"], roles=roles
        )
