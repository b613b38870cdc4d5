"""Each organization's signing keys: loaded once (parsing a PEM costs tens of ms), public halves published.

Rotation (docs/design/smart.md F2) is data on the keys: a new key is published first, signs from its
``sign_from`` instant (after verifiers' cached JWKS expired), and the old one disappears at ``retire_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, RSAKey

from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Organization, SigningKey

Key = RSAKey | ECKey


def load_signing_key(spec: SigningKey) -> Key:
    pem = spec.file.read_bytes()
    params: KeyParameters = {"kid": spec.kid, "alg": spec.alg, "use": "sig"}
    try:
        key: Key = RSAKey.import_key(pem, params) if spec.alg.startswith("RS") else ECKey.import_key(pem, params)
    except Exception as exc:  # joserfc raises several types for malformed or mismatched keys
        raise ConfigurationError(f"{spec.file}: not a usable {spec.alg} private key ({type(exc).__name__})") from None
    if spec.alg == "ES384" and key.as_dict(private=False).get("crv") != "P-384":
        raise ConfigurationError(f"{spec.file}: ES384 needs a P-384 key")
    if not key.is_private:
        raise ConfigurationError(f"{spec.file}: holds a public key; a private key is required")
    return key


class KeyRing:
    """Signing keys by organization id, each with its rotation window."""

    def __init__(self, organizations: list[Organization]) -> None:
        self._keys: dict[str, list[tuple[SigningKey, Key]]] = {
            org.id: [(spec, load_signing_key(spec)) for spec in org.backend_auth.keys] for org in organizations
        }

    def signing_key(self, organization_id: str, now: datetime | None = None) -> Key:
        """The newest key allowed to sign now (latest ``sign_from``; unset counts as earliest)."""
        now = now or datetime.now(UTC)
        usable = [(spec, key) for spec, key in self._keys.get(organization_id, []) if spec.signing(now)]
        if not usable:
            raise ConfigurationError(f"{organization_id}: no signing key is valid now")
        floor = datetime.min.replace(tzinfo=UTC)
        return max(usable, key=lambda pair: pair[0].sign_from or floor)[1]

    def signing_kid(self, organization_id: str, now: datetime | None = None) -> str | None:
        try:
            return self.signing_key(organization_id, now).kid
        except ConfigurationError:
            return None

    def public_jwks(self, organization_id: str, now: datetime | None = None) -> dict[str, Any]:
        """Every key not yet retired, public members only (``as_dict(private=False)``)."""
        now = now or datetime.now(UTC)
        return {
            "keys": [
                key.as_dict(private=False) for spec, key in self._keys.get(organization_id, []) if spec.publishable(now)
            ]
        }
