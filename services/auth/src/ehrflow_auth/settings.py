from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ehrflow_runtime.settings import CommonSettings


class AuthSettings(CommonSettings):
    port: int = 8001
    service_policy_file: Path = Field(description="Which service may get tokens for which organizations and features.")
    token_cache_key_file: Path = Field(
        description="32 random bytes (raw, or base64 text) sealing cached tokens (AES-256-GCM); from a Secret."
    )
    token_request_attempts: int = Field(default=3, ge=1, le=6)
    launch_state_ttl_s: int = Field(default=600, gt=0, le=600, description="How long a launch may take (G3).")
    launch_discovery_ttl_s: float = Field(
        default=300.0, ge=0, description="How long an EHR's SMART configuration is reused for launches (0: not at all)."
    )
    audit_summary_s: float = Field(default=10.0, gt=0, description="Interval of `token.served` summary records.")
