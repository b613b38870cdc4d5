"""Authenticating the EHR that sends a notification, per organization, before anything expensive.

Two kinds, configurable per organization (and per declared subscription) and usable together
(docs/design/notifications.md items 11–12):
- a static header secret from the Subscription's ``channel.header`` (any header name; ``Authorization``
  carries ``Bearer <secret>``), one or two valid at once for rotation;
- an HMAC-SHA256 over the **raw body bytes**: ``X-Hub-Signature: sha256=<hex>`` (WebSub, athenahealth) or
  ``X-Signature: <hex>`` (Medplum, whose delete notifications sign the body ``{}``).
Every configured secret is compared, in constant time, so timing does not reveal which one matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from ehrflow_runtime.organizations import Organization, WebhookSecret
from ehrflow_runtime.settings import read_secret_file

SIGNATURE_HEADERS = {"websub": "x-hub-signature", "medplum": "x-signature"}


def signature(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _presented_signature(style: str, headers: Mapping[str, str]) -> str:
    value = headers.get(SIGNATURE_HEADERS[style], "").strip()
    if style == "websub":
        scheme, _, value = value.partition("=")
        return value.lower() if scheme.lower() == "sha256" else ""
    return value.lower()


class SenderSecrets:
    """Each organization's webhook secrets and signing secrets, read once from their files. A declared
    subscription with secrets of its own is authenticated with those on its route instead of the
    organization's header secrets (signatures, not part of a FHIR Subscription, stay per organization)."""

    def __init__(self, organizations: list[Organization]) -> None:
        self._headers: dict[tuple[str, str | None], list[tuple[str, bytes]]] = {}
        for org in organizations:
            shared = _header_secrets(org.ingest.secrets)
            self._headers[(org.id, None)] = shared
            for sub in org.ingest.subscriptions:
                self._headers[(org.id, sub.name)] = _header_secrets(sub.secrets) if sub.secrets else shared
        self._signing = {
            org.id: [(s.style, read_secret_file(s.file).get_secret_value().encode()) for s in org.ingest.signatures]
            for org in organizations
        }

    def by_headers_only(self, organization_id: str) -> bool:
        """True when the organization signs nothing: its senders can be judged before their body is read."""
        return not self._signing.get(organization_id)

    def authenticate(
        self, organization_id: str, headers: Mapping[str, str], body: bytes = b"", subscription: str | None = None
    ) -> bool:
        matched = False
        secrets = self._headers.get((organization_id, subscription)) or self._headers.get((organization_id, None))
        for header, secret in secrets or []:
            presented = headers.get(header, "")
            if header == "authorization" and presented[:7].lower() == "bearer ":
                presented = presented[7:]
            matched |= hmac.compare_digest(presented.encode(), secret)
        for style, secret in self._signing.get(organization_id, []):
            expected = signature(secret, body).encode()
            matched |= hmac.compare_digest(_presented_signature(style, headers).encode(), expected)
        return matched


def _header_secrets(secrets: Sequence[WebhookSecret]) -> list[tuple[str, bytes]]:
    return [(s.header.lower(), read_secret_file(s.file).get_secret_value().encode()) for s in secrets]
