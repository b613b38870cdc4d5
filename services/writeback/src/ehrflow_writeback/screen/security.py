"""What keeps the review screen to its clinician, its organization and the EHRs that may frame it.

- **The screen's cookie** holds the launch's session id and binding, sealed (AES-256-GCM, the organization
  in the associated data) and partitioned (``ehrflow_runtime.cookies``): the session id never appears in a
  URL the server sees, and the cookie works inside an EHR's cross-site frame where third-party cookies are
  blocked. One cookie per organization (its path is the organization's screen), so two launches for two
  organizations in two frames stay two sessions.
- **CSRF**: the cookie is ``SameSite=None``, so every form carries a token derived from the session's secret
  binding; a page on another site cannot read or compute it.
- **Headers**: a Content-Security-Policy that allows only our own scripts and styles and, through
  ``frame-ancestors``, only the organization's EHR origins to frame the screen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import urlsplit

from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.sealing import Sealer

COOKIE = "ehrflow_review"


def screen_path(org_id: str) -> str:
    return f"/review/{org_id}/"


class ScreenCookie:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    @staticmethod
    def _aad(org_id: str) -> str:
        return f"review-screen|{org_id}"

    def seal(self, org_id: str, session_id: str, binding: str) -> str:
        sealed = self._sealer.seal(self._aad(org_id), f"{session_id}\n{binding}".encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, org_id: str, value: str | None) -> tuple[str, str] | None:
        """``(session id, binding)``, or None for a cookie that is absent, forged or another organization's."""
        if not value:
            return None
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        plain = self._sealer.open(self._aad(org_id), sealed)
        if plain is None:
            return None
        session_id, _, binding = plain.decode().partition("\n")
        return (session_id, binding) if session_id and binding else None


def csrf_token(org_id: str, session_id: str, binding: str) -> str:
    """A per-session form token: an HMAC keyed by the session's binding (a secret the page never sees)."""
    return hmac.new(binding.encode(), f"csrf|{org_id}|{session_id}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(presented: str | None, org_id: str, session_id: str, binding: str) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented), csrf_token(org_id, session_id, binding))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def frame_ancestors(org: Organization | None) -> list[str]:
    """Who may frame this organization's screen: ourselves, its launch issuers' origins, its configured EHR
    origins. Nobody, for an unknown organization."""
    if org is None:
        return ["'none'"]
    origins = {_origin(i) for i in (org.launch.issuers if org.launch else ())} | set(org.review.embed_origins)
    return ["'self'", *sorted(origins)]


def headers(ancestors: list[str]) -> dict[str, str]:
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {' '.join(ancestors)}",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin-allow-popups",
    }
