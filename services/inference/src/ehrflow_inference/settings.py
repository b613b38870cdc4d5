from __future__ import annotations

from ehrflow_runtime.settings import AuthClientSettings, CommonSettings


class InferenceSettings(CommonSettings):
    port: int = 8003
    auth: AuthClientSettings
