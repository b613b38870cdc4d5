from __future__ import annotations

from ipaddress import ip_network

from pydantic import Field, field_validator, model_validator

from ehrflow_runtime.settings import AuthClientSettings, CommonSettings

RECORD_OVERHEAD = 256 * 1024
"""Room left in a record for the envelope around a notification's resource (ids, references, headers)."""


class IngestSettings(CommonSettings):
    port: int = 8002
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_events_per_notification: int = Field(
        default=1000, ge=1, description="A notification listing more events gets 413 (ehrflow_ingest.limits)."
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Addresses or CIDRs of the ingress whose X-Forwarded-Client-Cert is believed (organizations "
        "that authenticate by client certificate); empty: the header is never believed.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="A notification's body must arrive within this; a slower sender gets 408."
    )
    quarantine_max_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="How much of a rejected body the quarantine record keeps (its size and SHA-256 are always kept).",
    )
    public_url: str | None = Field(
        default=None,
        description="Where EHRs reach ingest (`https://ehrflow.example.org/ingest`). Needed by the subscription "
        "manager, which points declared subscriptions at `{public_url}/v1/notify/{org}/sub/{name}`.",
    )
    auth: AuthClientSettings | None = Field(
        default=None, description="The auth service, for recovery queries and the subscription manager."
    )
    background: bool = Field(default=True, description="Run the recovery and subscription-manager loop.")
    tick_s: float = Field(default=5.0, gt=0, description="How often the loop looks for due work.")
    manage_every_s: float = Field(default=60.0, gt=0, description="How often declared subscriptions are checked.")
    gap_grace_s: float = Field(
        default=30.0, ge=0, description="How long a gap may wait for late, out-of-order deliveries before recovery."
    )
    recovery_overlap_s: float = Field(
        default=60.0, ge=0, description="Searches start this much before the last event seen (clock skew)."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ip_network(network)
            except ValueError:
                raise ValueError(f"trusted_proxies: '{network}' is not an address or CIDR") from None
        return value

    @model_validator(mode="after")
    def _records_fit_on_the_bus(self) -> IngestSettings:
        """An accepted body becomes records of about its size plus an envelope; a rejected one a quarantine
        record of at most ``quarantine_max_bytes`` (base64: 4/3 of it). Both must fit under the broker's
        record limit, or a valid notification would get 503 for ever."""
        room = self.kafka.max_message_bytes - RECORD_OVERHEAD
        if self.max_body_bytes > room or self.quarantine_max_bytes * 4 // 3 > room:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) and 4/3 of quarantine_max_bytes "
                f"({self.quarantine_max_bytes}) must be at most kafka.max_message_bytes "
                f"({self.kafka.max_message_bytes}) less {RECORD_OVERHEAD} bytes for the record's envelope"
            )
        return self
