from __future__ import annotations

from ehrflow_runtime.settings import AuthClientSettings, CommonSettings


class WritebackSettings(CommonSettings):
    port: int = 8004
    auth: AuthClientSettings
