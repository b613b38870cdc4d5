"""Client assertions (docs/design/smart.md C1–C3): claims, algorithms, a new jti every time."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jwt

from ehrflow_auth.assertion import LIFETIME_S, client_assertion
from ehrflow_auth.keys import KeyRing, load_signing_key
from ehrflow_devstack.config import generate
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import SigningKey


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    folder = generate(tmp_path_factory.mktemp("keys")).folder / "keys"
    return {
        "RS384": SigningKey(file=folder / "org1.pem", kid="k-rsa", alg="RS384"),
        "ES384": SigningKey(file=folder / "org2.pem", kid="k-ec", alg="ES384"),
    }


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_claims_and_header(keys: dict[str, SigningKey], alg: str) -> None:
    key = load_signing_key(keys[alg])
    token, jti = client_assertion(client_id="ehrflow-org1", audience="https://ehr/auth/token", key=key, now=1000)
    decoded = jwt.decode(token, key, algorithms=[alg])
    assert decoded.header == {"alg": alg, "kid": keys[alg].kid, "typ": "JWT"}
    assert decoded.claims == {
        "iss": "ehrflow-org1",
        "sub": "ehrflow-org1",
        "aud": "https://ehr/auth/token",
        "jti": jti,
        "iat": 1000,
        "exp": 1000 + LIFETIME_S,
    }
    assert isinstance(decoded.claims["aud"], str)
    assert LIFETIME_S <= 300 and 22 <= len(jti) <= 151


def test_jti_never_repeats(keys: dict[str, SigningKey]) -> None:
    key = load_signing_key(keys["ES384"])
    jtis = {client_assertion(client_id="c", audience="https://t", key=key)[1] for _ in range(1000)}
    assert len(jtis) == 1000


def test_published_jwks_has_no_private_members(keys: dict[str, SigningKey]) -> None:
    from ehrflow_runtime.organizations import Organization

    orgs = [
        Organization.model_validate(
            {
                "id": f"o{i}",
                "name": "n",
                "fhir_base_url": "https://ehr/fhir",
                "backend_auth": {"client_id": "c", "keys": [spec.model_dump()]},
                "features": {"news2": ["s"]},
                "ingest": {"secrets": [{"header": "X", "file": spec.file}]},
                "review": {"api_key_file": spec.file},
            }
        )
        for i, spec in enumerate(keys.values())
    ]
    ring = KeyRing(orgs)
    for org, spec in zip(orgs, keys.values(), strict=True):
        [jwk] = ring.public_jwks(org.id)["keys"]
        assert jwk["kid"] == spec.kid and jwk["alg"] == spec.alg
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


def test_wrong_key_type_is_a_configuration_error(keys: dict[str, SigningKey]) -> None:
    with pytest.raises(ConfigurationError, match="ES384"):
        load_signing_key(SigningKey(file=keys["RS384"].file, kid="k", alg="ES384"))


def test_garbage_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigurationError, match="not a usable"):
        load_signing_key(SigningKey(file=bad, kid="k", alg="RS384"))
