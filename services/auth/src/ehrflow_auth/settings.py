from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ehrflow_runtime.settings import CommonSettings


class AuthSettings(CommonSettings):
    port: int = 8001
    service_credentials_dir: Path = Field(
        description="Folder with one file per calling service (file name = service name, content = its credential)."
    )
    token_request_attempts: int = Field(default=3, ge=1, le=6)
