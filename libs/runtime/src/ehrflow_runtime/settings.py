"""Settings shared by every service: read from ``EHRFLOW_*`` variables, built in ``main``, never at import.

Nested fields use ``__``: ``EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    enable_idempotence: bool = Field(
        default=True,
        description="Kafka's idempotent producer. On for Apache Kafka; off for Tansu (the local broker), "
        "which answers InitProducerId with UnknownError. Exactly-once effects come from our own dedupe.",
    )
    publish_timeout_s: float = Field(default=5.0, description="How long a publish may wait for acks=all.")
    create_topics: bool = Field(default=True, description="Create missing topics at start-up.")
    partitions: int = 6
    replication_factor: int = 1
    max_message_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024 * 1024,
        description="The largest record ehrflow writes: the producers' request limit, and `max.message.bytes` of "
        "the topics ehrflow creates. The brokers' own `message.max.bytes` (and `replica.fetch.max.bytes`) must "
        "allow it too, and topics made by a platform need the same `max.message.bytes`.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client of the service connects to the brokers."
    )
    ssl_ca_file: Path | None = Field(
        default=None, description="The brokers' CA (PEM) for SSL and SASL_SSL; unset: the system's trust store."
    )
    ssl_cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    ssl_key_file: Path | None = Field(default=None, description="Its private key (PEM), from a Secret.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (a mounted Secret); read at start-up."
    )

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and (
            self.sasl_username is None or self.sasl_password_file is None
        ):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password_file")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together (mutual TLS)")
        if not self.security_protocol.endswith("SSL") and (self.ssl_ca_file or self.ssl_cert_file):
            raise ValueError(f"ssl_* files are set but security_protocol {self.security_protocol} does not use TLS")
        return self


class ConsumerPolicy(BaseModel):
    """How hard a Kafka consumer tries before it dead-letters a record (``ehrflow_runtime.consumers``)."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(
        default=3, ge=1, description="Tries in all for a record whose handling raised something unexpected."
    )
    backoff_s: float = Field(
        default=1.0, ge=0, description="Pause after the first unexpected failure; doubled after each further one."
    )
    max_backoff_s: float = Field(default=30.0, ge=0, description="The longest pause between two tries.")
    retry_delay_s: float = Field(
        default=2.0, ge=0, description="Pause before a transient failure (an upstream or Redis down) is redelivered."
    )

    def backoff(self, failures: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1)))


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EHRFLOW_", env_nested_delimiter="__", extra="ignore")

    organizations_file: Path = Field(description="The organization registry (YAML).")
    registry_reload_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the registry and the files it names are checked for changes (SIGHUP: at once).",
    )
    kafka: KafkaSettings = KafkaSettings()
    consumer: ConsumerPolicy = ConsumerPolicy()
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_url_file: Path | None = Field(
        default=None,
        description="A file holding the Redis URL (a mounted Secret, when the URL carries a password); read at "
        "start-up, and used instead of `redis_url`.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrency: int = Field(
        default=2000,
        ge=1,
        description="Open connections (and requests in flight) at once, the arriving one included; beyond it the "
        "server answers 503 at once.",
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _redis_url_from_file(self) -> CommonSettings:
        if self.redis_url_file is not None:
            self.redis_url = read_secret_file(self.redis_url_file)
        return self


class AuthClientSettings(BaseModel):
    """How a service reaches the auth service's internal token API."""

    url: str = "http://127.0.0.1:8001"
    service_name: str = Field(description="This service's name, as the auth service knows it.")
    credential_file: Path = Field(description="File holding this service's credential for the auth service.")
    timeout_s: float = 10.0


def read_secret_file(path: Path) -> SecretStr:
    """Read a secret from a mounted file (a Kubernetes Secret), stripping the trailing newline."""
    return SecretStr(path.read_text(encoding="utf-8").strip())
