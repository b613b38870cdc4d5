from __future__ import annotations

from typing import Literal

from pydantic import Field

from ehrflow_runtime.retry_tiers import RetryPolicy
from ehrflow_runtime.settings import AuthClientSettings, CommonSettings


class InferenceSettings(CommonSettings):
    port: int = 8003
    auth: AuthClientSettings
    retry: RetryPolicy = RetryPolicy()
    workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Notification partitions this replica evaluates at once (a consumer each, one group). A model "
        "answering in 50 ms caps one consumer at 20 events/s; more than the topic's partitions is idle.",
    )
    contract_check: Literal["enforce", "warn", "off"] = Field(
        default="enforce",
        description="At start-up, compare each enabled contract with its EHR's CapabilityStatement and scopes: "
        "`enforce` refuses to start on a mismatch, `warn` logs it. An EHR that cannot be reached is logged and "
        "not held against it (`ehrflow-inference check-contracts` reports it).",
    )
