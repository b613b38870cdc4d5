"""Authenticating the EHR that sends a notification, per organization, before anything expensive.

Two kinds, configurable per organization (and per declared subscription) and usable together
(docs/design/notifications.md items 11–12):
- a static header secret from the Subscription's ``channel.header`` (any header name; ``Authorization``
  carries ``Bearer <secret>``), one or two valid at once for rotation;
- an HMAC-SHA256 over the **raw body bytes**: ``X-Hub-Signature: sha256=<hex>`` (WebSub, athenahealth) or
  ``X-Signature: <hex>`` (Medplum, whose delete notifications sign the body ``{}``).
- a client certificate the ingress verified (mutual TLS at the edge), forwarded in Envoy's
  ``X-Forwarded-Client-Cert`` header (``Hash=<sha256 hex>;Subject="CN=…"``) and believed only from a
  trusted proxy's address (``EHRFLOW_TRUSTED_PROXIES``), matched on fingerprint and/or subject.
Every configured secret is compared, in constant time, so timing does not reveal which one matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ehrflow_runtime.organizations import Organization, WebhookSecret
from ehrflow_runtime.settings import read_secret_file

SIGNATURE_HEADERS = {"websub": "x-hub-signature", "medplum": "x-signature"}
FORWARDED_CERT_HEADER = "x-forwarded-client-cert"


@dataclass(frozen=True)
class ForwardedCert:
    sha256: str | None
    subject: str | None


def forwarded_cert(value: str | None) -> ForwardedCert | None:
    """The client certificate in an ``X-Forwarded-Client-Cert`` value: its last element (the one the
    proxy nearest to us added), ``Hash`` and ``Subject``; quoted values may hold commas and semicolons."""
    if not value:
        return None
    elements: list[dict[str, str]] = [{}]
    key, buffer, quoted = "", "", False
    for char in value + ";":
        if char == '"':
            quoted = not quoted
        elif quoted:
            buffer += char
        elif char == "=" and not key:
            key, buffer = buffer.strip().lower(), ""
        elif char in ";,":
            if key:
                elements[-1][key] = buffer.strip()
            key, buffer = "", ""
            if char == ",":
                elements.append({})
        else:
            buffer += char
    last = next((e for e in reversed(elements) if e), None)
    if last is None:
        return None
    digest = last.get("hash", "").replace(":", "").lower() or None
    return ForwardedCert(digest, last.get("subject") or None)


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
        self._certificates = {
            org.id: [(c.sha256, c.subject) for c in org.ingest.client_certificates] for org in organizations
        }

    def by_headers_only(self, organization_id: str) -> bool:
        """True when the organization signs nothing: its senders can be judged before their body is read."""
        return not self._signing.get(organization_id)

    def authenticate(
        self,
        organization_id: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        subscription: str | None = None,
        certificate: ForwardedCert | None = None,
    ) -> bool:
        """Whether the sender is the organization's. ``certificate`` is what a trusted proxy forwarded
        (the caller decides whom to believe); never taken from an untrusted peer."""
        matched = False
        for sha256, subject in self._certificates.get(organization_id, []):
            if certificate is not None:
                same_hash = sha256 is None or hmac.compare_digest((certificate.sha256 or "").encode(), sha256.encode())
                same_subject = subject is None or certificate.subject == subject
                matched |= same_hash and same_subject
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
