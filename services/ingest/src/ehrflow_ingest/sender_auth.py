"""Authenticating the EHR that sends a notification: per organization, before anything expensive."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr

from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.settings import read_secret_file


class SenderSecrets:
    """Each organization's webhook secrets (one, or two during rotation), read once from their files."""

    def __init__(self, organizations: list[Organization]) -> None:
        self._secrets: dict[str, list[tuple[str, SecretStr]]] = {
            org.id: [(s.header.lower(), read_secret_file(s.file)) for s in org.ingest.secrets] for org in organizations
        }

    def authenticate(self, organization_id: str, headers: Mapping[str, str]) -> bool:
        """True when any of the organization's secrets is presented in its header (constant-time compare).

        Every configured secret is compared, so timing does not reveal which one matched.
        """
        matched = False
        for header, secret in self._secrets.get(organization_id, []):
            presented = headers.get(header, "")
            if header == "authorization" and presented[:7].lower() == "bearer ":
                presented = presented[7:]
            matched |= hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())
        return matched
