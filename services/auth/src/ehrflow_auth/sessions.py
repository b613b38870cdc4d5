"""Clinician sessions: one per launch, bound to (organization, iss, patient, user) — docs/design/smart.md G6.

A session is found only by its random id *and* its binding cookie, never by user or organization:
two launches in one browser (embedded EHR browsers share storage) are two sessions. Redis keeps the
session under a hash of its id, with the session's lifetime as TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

PREFIX = "ehrflow:auth:session:"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    organization_id: str
    iss: str
    patient: str | None
    user: str
    scope: str
    created_at: float
    expires_at: float
    roles: tuple[str, ...] = ()
    """ehrflow roles from the launch (the organization's ``launch.roles``)."""

    def view(self) -> dict[str, object]:
        return {
            "organization": self.organization_id,
            "iss": self.iss,
            "patient": self.patient,
            "user": self.user,
            "scope": self.scope,
            "expires_at": self.expires_at,
            "roles": list(self.roles),
        }


class SessionStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, session: Session) -> tuple[str, str]:
        """Store a new session; returns ``(session id, binding value)`` — both are secrets."""
        session_id, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        record = {**asdict(session), "binding": _digest(binding)}
        ttl = max(1, int(session.expires_at - time.time()))
        await self._redis.set(PREFIX + _digest(session_id), json.dumps(record), ex=ttl)
        return session_id, binding

    async def get(self, session_id: str | None, binding: str | None) -> Session | None:
        """The session for this id, if the binding cookie matches."""
        if not session_id or not binding:
            return None
        raw = await self._redis.get(PREFIX + _digest(session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        if not hmac.compare_digest(record.pop("binding"), _digest(binding)):
            return None
        record["roles"] = tuple(record.get("roles", ()))
        return Session(**record)

    async def end(self, session_id: str) -> bool:
        return bool(await self._redis.delete(PREFIX + _digest(session_id)))
