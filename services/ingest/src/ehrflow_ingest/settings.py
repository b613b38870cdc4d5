from __future__ import annotations

from pydantic import Field

from ehrflow_runtime.settings import AuthClientSettings, CommonSettings


class IngestSettings(CommonSettings):
    port: int = 8002
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
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
