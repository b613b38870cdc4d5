"""A FHIR REST client bound to one organization: its base URL, its tokens, nothing else."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.outcomes import FHIR_JSON
from ehrflow_runtime.tokens import TokenClient


class FhirClient:
    """Reads and writes one organization's FHIR API for one feature, with tokens from the auth service.

    A bearer token is only ever sent to URLs under the organization's own FHIR base. A 401 with a
    cached token invalidates it and retries once with a new one.
    """

    def __init__(self, http: httpx.AsyncClient, tokens: TokenClient, organization: Organization, feature: str) -> None:
        self._http = http
        self._tokens = tokens
        self.organization = organization
        self.feature = feature
        self.base = organization.fhir_base_url

    def url(self, path: str) -> str:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"
        if (
            not (url == self.base or url.startswith(self.base + "/"))
            or urlsplit(url).netloc != urlsplit(self.base).netloc
        ):
            raise UpstreamRejected(f"refusing to send {self.organization.id}'s token outside its FHIR base", status=0)
        return url

    async def read(self, reference: str) -> dict[str, Any]:
        return await self._json("GET", reference)

    async def search(self, resource_type: str, params: dict[str, str] | list[tuple[str, str]]) -> list[dict[str, Any]]:
        """One page of a search: the matching resources (``search.mode`` match only)."""
        bundle = await self._json("GET", resource_type, params=params)
        return [
            e["resource"]
            for e in bundle.get("entry", [])
            if "resource" in e and (e.get("search") or {}).get("mode", "match") == "match"
        ]

    async def search_all(
        self, resource_type: str, params: list[tuple[str, str]], *, max_pages: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every page of a search, following ``next`` links (only under this organization's base), up to
        ``max_pages``. Returns the matches and whether the search was complete."""
        found: list[dict[str, Any]] = []
        path: str | None = resource_type
        query: list[tuple[str, str]] | None = params
        for _ in range(max_pages):
            assert path is not None
            bundle = await self._json("GET", path, params=query)
            found += [
                e["resource"]
                for e in bundle.get("entry", [])
                if "resource" in e and (e.get("search") or {}).get("mode", "match") == "match"
            ]
            path = next((link.get("url") for link in bundle.get("link", []) if link.get("relation") == "next"), None)
            query = None
            if not path:
                return found, True
        return found, False

    async def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT a resource at its id."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        return await self._json("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource, headers=headers)

    async def create(self, resource: dict[str, Any], *, if_none_exist: str | None = None) -> dict[str, Any]:
        """POST a resource; with ``if_none_exist`` a conditional create (an existing match is returned)."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        return await self._json("POST", resource["resourceType"], json=resource, headers=headers)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.url(path)
        org = self.organization.id
        headers = {"Accept": FHIR_JSON, **kwargs.pop("headers", {})}
        for attempt in (1, 2):
            token = await self._tokens.token(org, self.feature)
            headers["Authorization"] = f"Bearer {token.value.get_secret_value()}"
            try:
                response = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"{org} FHIR {method} {_kind(path)}: {type(exc).__name__}") from exc
            if response.status_code == 401 and attempt == 1:
                self._tokens.invalidate(org, self.feature)
                continue
            break
        if response.status_code >= 500 or response.status_code == 429:
            raise UpstreamUnavailable(f"{org} FHIR {method} {_kind(path)} answered {response.status_code}")
        if response.status_code >= 400:
            raise UpstreamRejected(
                f"{org} FHIR {method} {_kind(path)} answered {response.status_code}", status=response.status_code
            )
        return response


def _kind(path: str) -> str:
    """The resource type a path addresses, for messages: ids and query strings may identify a patient."""
    segments = [p for p in urlsplit(path).path.split("/") if p]
    return next((p for p in segments if p[:1].isupper()), "resource")
