from __future__ import annotations

from pydantic import Field

from ehrflow_runtime.settings import CommonSettings


class IngestSettings(CommonSettings):
    port: int = 8002
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
