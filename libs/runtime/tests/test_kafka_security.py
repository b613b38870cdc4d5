"""How the Kafka clients connect: PLAINTEXT, TLS (with mutual TLS) and SASL, from one set of settings.

The broker (FastStream) and the plain aiokafka clients (admin, topic reader, replay, ingest's sink) get
the same options from ``ehrflow_runtime.broker``; these tests check what they are given, and that an
incomplete setting is refused at start-up rather than at the first publish.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ehrflow_runtime.broker import client_options, make_broker
from ehrflow_runtime.settings import KafkaSettings


def _ca(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate and its key, written as PEM: CA file, client certificate and key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "client.pem", folder / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, cert_file, key_file


def test_plaintext_is_the_default() -> None:
    assert client_options(KafkaSettings(bootstrap_servers="k:9092")) == {"bootstrap_servers": "k:9092"}


def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    ca, cert, key = _ca(tmp_path)
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_file=ca, ssl_cert_file=cert, ssl_key_file=key)
    options = client_options(kafka)
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka-test"),),)]


def test_sasl_scram_over_tls_reads_the_password_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_username="ehrflow-ingest", sasl_password_file=tmp_path / "password"
    )
    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("ehrflow-ingest", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    plain = client_options(kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}))
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and plain["sasl_mechanism"] == "PLAIN"


def test_the_broker_gets_the_same_security(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret")
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password_file=tmp_path / "password"
    )
    broker = make_broker(kafka, client_id="test")
    consumers = broker.config.broker_config.builder.keywords  # what FastStream makes its consumers with
    assert consumers["security_protocol"] == "SASL_PLAINTEXT" and consumers["sasl_plain_password"] == "s3cret"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "needs sasl_username and sasl_password_file"),
        ({"security_protocol": "SSL", "ssl_cert_file": "c.pem"}, "go together"),
        ({"ssl_ca_file": "ca.pem"}, "does not use TLS"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_incomplete_security_is_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings.model_validate(settings)
