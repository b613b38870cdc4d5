from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ehrflow_runtime.retry_tiers import RetryPolicy
from ehrflow_runtime.settings import AuthClientSettings, CommonSettings


class WritebackSettings(CommonSettings):
    port: int = 8004
    auth: AuthClientSettings
    queue_key_file: Path = Field(
        description="32 random bytes (raw, or base64 text) sealing drafts in the review queue (AES-256-GCM); "
        "from a Secret."
    )
    public_url: str | None = Field(
        default=None,
        description="How EHRs reach this service (`https://ehrflow.example.org`): CDS Hooks JWTs must name "
        "`{public_url}/cds/{org}/cds-services/…` as their audience. Unset: the request's own URL.",
    )
    draft_ttl_s: int = Field(
        default=30 * 24 * 3600, gt=0, description="How long a draft stays in the review queue after it was queued."
    )
    retry: RetryPolicy = RetryPolicy()
    workers: int = Field(default=4, ge=1, le=64, description="Decision partitions one replica writes at once.")
