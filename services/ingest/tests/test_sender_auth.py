"""Sender authentication per organization: header secrets, rotation, constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from ehrflow_ingest.sender_auth import ForwardedCert, SenderSecrets, forwarded_cert
from ehrflow_runtime.organizations import ClientCertificate, Ingest, Organization


def _with_ingest(organization: Organization, org_id: str, **ingest: object) -> Organization:
    """The shared test organization under another id, with its own ingest section."""
    return organization.model_copy(update={"id": org_id, "ingest": Ingest.model_validate(ingest)})


def _org(organization: Organization, tmp_path: Path, org_id: str, secrets: list[tuple[str, str]]) -> Organization:
    files = []
    for i, (header, value) in enumerate(secrets):
        path = tmp_path / f"{org_id}-{i}"
        path.write_text(value + "\n")
        files.append({"header": header, "file": path})
    return _with_ingest(organization, org_id, secrets=files)


def test_each_organization_accepts_only_its_own_secret(organization: Organization, tmp_path: Path) -> None:
    secrets = SenderSecrets(
        [
            _org(organization, tmp_path, "org1", [("X-Hook", "one")]),
            _org(organization, tmp_path, "org2", [("X-Hook", "two")]),
        ]
    )
    assert secrets.authenticate("org1", {"x-hook": "one"})
    assert not secrets.authenticate("org1", {"x-hook": "two"})
    assert secrets.authenticate("org2", {"x-hook": "two"})
    assert not secrets.authenticate("org1", {})
    assert not secrets.authenticate("org3", {"x-hook": "one"})


def test_two_secrets_during_rotation(organization: Organization, tmp_path: Path) -> None:
    secrets = SenderSecrets([_org(organization, tmp_path, "org1", [("X-Hook", "old"), ("X-Hook-Next", "new")])])
    assert secrets.authenticate("org1", {"x-hook": "old"})
    assert secrets.authenticate("org1", {"x-hook-next": "new"})
    assert not secrets.authenticate("org1", {"x-hook": "new"})


def test_authorization_bearer_header(organization: Organization, tmp_path: Path) -> None:
    secrets = SenderSecrets([_org(organization, tmp_path, "org1", [("Authorization", "s3cret")])])
    assert secrets.authenticate("org1", {"authorization": "Bearer s3cret"})
    assert not secrets.authenticate("org1", {"authorization": "Bearer s3cre"})


def _signed_org(organization: Organization, tmp_path: Path, styles: list[str]) -> Organization:
    files = []
    for style in styles:
        path = tmp_path / f"hmac-{style}"
        path.write_text(f"signing-secret-{style}\n")
        files.append({"style": style, "file": path})
    return _with_ingest(organization, "org1", signatures=files)


BODY = b'{"resourceType":"Bundle","type":"history","entry":[]}'


def test_websub_signature_vector_and_one_flipped_byte(organization: Organization, tmp_path: Path) -> None:
    secrets = SenderSecrets([_signed_org(organization, tmp_path, ["websub"])])
    digest = hmac.new(b"signing-secret-websub", BODY, hashlib.sha256).hexdigest()  # computed here, not by ingest
    assert secrets.authenticate("org1", {"x-hub-signature": f"sha256={digest}"}, BODY)
    assert secrets.authenticate("org1", {"x-hub-signature": f"SHA256={digest.upper()}"}, BODY)
    flipped = bytes([BODY[0] ^ 0x01]) + BODY[1:]
    assert not secrets.authenticate("org1", {"x-hub-signature": f"sha256={digest}"}, flipped)
    assert not secrets.authenticate("org1", {"x-hub-signature": f"sha1={digest}"}, BODY)
    assert not secrets.authenticate("org1", {}, BODY)


def test_medplum_signature_including_the_delete_body(organization: Organization, tmp_path: Path) -> None:
    secrets = SenderSecrets([_signed_org(organization, tmp_path, ["medplum"])])
    for body in (BODY, b"{}"):
        digest = hmac.new(b"signing-secret-medplum", body, hashlib.sha256).hexdigest()
        assert secrets.authenticate("org1", {"x-signature": digest}, body)
        assert not secrets.authenticate("org1", {"x-signature": digest}, body + b" ")


def test_a_signature_for_another_organization_does_not_open_this_one(
    organization: Organization, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    org1 = _signed_org(organization, one, ["websub"])
    org2 = _signed_org(organization, two, ["websub"]).model_copy(update={"id": "org2"})
    (two / "hmac-websub").write_text("a-different-secret\n")
    secrets = SenderSecrets([org1, org2])
    digest = hmac.new(b"a-different-secret", BODY, hashlib.sha256).hexdigest()
    assert secrets.authenticate("org2", {"x-hub-signature": f"sha256={digest}"}, BODY)
    assert not secrets.authenticate("org1", {"x-hub-signature": f"sha256={digest}"}, BODY)


def test_a_declared_subscription_with_its_own_secret_accepts_that_one_only(
    organization: Organization, tmp_path: Path
) -> None:
    (tmp_path / "shared").write_text("shared")
    (tmp_path / "own").write_text("own")
    org = _with_ingest(
        organization,
        "org1",
        secrets=[{"header": "X-Hook", "file": tmp_path / "shared"}],
        subscriptions=[
            {
                "name": "vitals",
                "criteria": "Observation?code=x",
                "secrets": [{"header": "X-Hook", "file": tmp_path / "own"}],
            },
            {"name": "labs", "criteria": "Observation?code=y"},
        ],
    )
    secrets = SenderSecrets([org])
    assert secrets.authenticate("org1", {"x-hook": "own"}, subscription="vitals")
    assert not secrets.authenticate("org1", {"x-hook": "shared"}, subscription="vitals")
    assert not secrets.authenticate("org1", {"x-hook": "own"})  # not on the organization's route
    assert not secrets.authenticate("org1", {"x-hook": "own"}, subscription="labs")
    assert secrets.authenticate("org1", {"x-hook": "shared"}, subscription="labs")  # no secret of its own


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'By=spiffe://ingress;Hash=ABCD;Subject="CN=ehr,O=North, Inc.";URI=',
            ForwardedCert("abcd", "CN=ehr,O=North, Inc."),
        ),
        ('Hash=11;Subject="CN=first",Hash=22;Subject="CN=nearest"', ForwardedCert("22", "CN=nearest")),
        ("Subject=CN=plain", ForwardedCert(None, "CN=plain")),
        ("", None),
        (None, None),
    ],
)
def test_the_forwarded_client_certificate_is_the_nearest_proxys_element(
    header: str | None, expected: ForwardedCert | None
) -> None:
    assert forwarded_cert(header) == expected


def test_a_client_certificate_matches_on_fingerprint_and_subject(organization: Organization, tmp_path: Path) -> None:
    digest = "ab" * 32
    org = organization.model_copy(
        update={
            "ingest": organization.ingest.model_copy(
                update={"client_certificates": (ClientCertificate(sha256=digest, subject="CN=ehr"),)}
            )
        }
    )
    secrets = SenderSecrets([org])
    assert secrets.authenticate("org1", {}, certificate=ForwardedCert(digest, "CN=ehr"))
    assert not secrets.authenticate("org1", {}, certificate=ForwardedCert(digest, "CN=other"))
    assert not secrets.authenticate("org1", {}, certificate=ForwardedCert("cd" * 32, "CN=ehr"))
    assert not secrets.authenticate("org1", {})  # no certificate forwarded (or from an untrusted peer)
