"""SMART configuration discovery (``{base}/.well-known/smart-configuration``) with per-organization overrides."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ehrflow_runtime.errors import ConfigurationError, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.tls import failure


@dataclass(frozen=True)
class SmartConfiguration:
    token_endpoint: str


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def discover(http: httpx.AsyncClient, org: Organization) -> SmartConfiguration:
    """The organization's token endpoint: its override, else discovery.

    A discovered token endpoint on another host than the FHIR base marks the organization misconfigured
    (nothing is sent there); an organization whose token server lives elsewhere pins ``token_endpoint``.
    """
    if org.backend_auth.token_endpoint:
        return SmartConfiguration(org.backend_auth.token_endpoint)
    url = f"{org.fhir_base_url}/.well-known/smart-configuration"
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        why = failure(exc, org)
        raise UpstreamUnavailable(f"{org.id}: SMART discovery failed ({why})") from exc
    if response.status_code >= 500:
        raise UpstreamUnavailable(f"{org.id}: SMART discovery answered {response.status_code}")
    if response.status_code != 200:
        raise ConfigurationError(f"{org.id}: SMART discovery answered {response.status_code}")
    try:
        doc = response.json()
    except ValueError:
        raise ConfigurationError(f"{org.id}: SMART discovery document is not JSON") from None
    token_endpoint = doc.get("token_endpoint")
    if not isinstance(token_endpoint, str) or not token_endpoint:
        raise ConfigurationError(f"{org.id}: SMART discovery has no token_endpoint")
    if "client_credentials" not in (doc.get("grant_types_supported") or ["client_credentials"]):
        raise ConfigurationError(f"{org.id}: EHR does not offer the client_credentials grant")
    method = org.backend_auth.method
    methods = doc.get("token_endpoint_auth_methods_supported")
    if methods is not None and method not in methods:
        raise ConfigurationError(f"{org.id}: EHR does not offer {method}")
    algs = doc.get("token_endpoint_auth_signing_alg_values_supported")
    ours = {k.alg for k in org.backend_auth.keys}
    if method == "private_key_jwt" and algs is not None and not ours & set(algs):
        raise ConfigurationError(f"{org.id}: EHR does not accept {'/'.join(sorted(ours))} assertions")
    if _origin(token_endpoint) != org.fhir_origin:
        raise ConfigurationError(f"{org.id}: discovered token endpoint is on a foreign host; pin token_endpoint")
    return SmartConfiguration(token_endpoint)
