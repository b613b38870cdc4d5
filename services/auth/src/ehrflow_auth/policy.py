"""Who may ask the auth service for what: each calling service, its credential, its organizations and features.

```yaml
services:
  inference:
    credential_file: service-credentials/inference   # mounted from a Secret; relative to this file
    organizations: ["*"]                              # or a list of organization ids
    features: [news2]
```
"""

from __future__ import annotations

import hmac
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.settings import read_secret_file


class ServiceGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    credential_file: Path
    organizations: tuple[str, ...] = Field(min_length=1)
    features: tuple[str, ...] = Field(default=())
    introspect_sessions: bool = Field(default=False, description="May ask who a clinician session belongs to.")

    def allows(self, organization_id: str, feature: str) -> bool:
        return ("*" in self.organizations or organization_id in self.organizations) and feature in self.features


class ServicePolicy:
    def __init__(self, grants: dict[str, ServiceGrant], credentials: dict[str, SecretStr]) -> None:
        self._grants = grants
        self._credentials = credentials

    @classmethod
    def load(cls, path: Path) -> ServicePolicy:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            grants = {name: ServiceGrant.model_validate(g) for name, g in (raw or {}).get("services", {}).items()}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise ConfigurationError(f"{path}: cannot read the service policy ({type(exc).__name__})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigurationError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if not grants:
            raise ConfigurationError(f"{path}: no services listed")
        credentials = {}
        for name, grant in grants.items():
            file = grant.credential_file if grant.credential_file.is_absolute() else path.parent / grant.credential_file
            if not file.is_file():
                raise ConfigurationError(f"{path}: services.{name}.credential_file: file not found: {file}")
            credentials[name] = read_secret_file(file)
        return cls(grants, credentials)

    def known(self, service: str | None) -> str:
        """``service`` if the policy names it, else ``unknown``: a caller's claim, bounded for counting."""
        return service if service in self._credentials else "unknown"

    def authenticate(self, service: str | None, presented: str | None) -> ServiceGrant | None:
        """The service's grant when it presented its own credential (constant-time compare), else None."""
        expected = self._credentials.get(service or "")
        candidate = (presented or "").encode()
        reference = expected.get_secret_value().encode() if expected else b"\x00" * max(1, len(candidate))
        matched = hmac.compare_digest(candidate, reference)
        return self._grants[service] if matched and expected is not None and service else None
