"""Each organization's signing key: loaded once (parsing a PEM costs tens of ms), public half published."""

from __future__ import annotations

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
    """Signing keys by organization id."""

    def __init__(self, organizations: list[Organization]) -> None:
        self._keys = {org.id: load_signing_key(org.backend_auth.key) for org in organizations}

    def signing_key(self, organization_id: str) -> Key:
        return self._keys[organization_id]

    def public_jwks(self, organization_id: str) -> dict[str, Any]:
        """The organization's JWKS: public members only (``as_dict(private=False)``)."""
        return {"keys": [self._keys[organization_id].as_dict(private=False)]}
