"""A FHIR REST client bound to one organization: its base URL, its tokens, nothing else."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from ehrflow_runtime.errors import UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization
from ehrflow_runtime.outcomes import FHIR_JSON
from ehrflow_runtime.retry_tiers import retry_after_s
from ehrflow_runtime.tls import failure
from ehrflow_runtime.tokens import TokenClient

_ID = r"(?!\.{1,2}(?:[/?]|$))[A-Za-z0-9\-.]{1,64}"
RELATIVE = re.compile(rf"^[A-Z][A-Za-z]{{1,63}}(?:/{_ID}(?:/_history/{_ID})?)?(?:/\$[A-Za-z][A-Za-z0-9-]*)?(?:\?.*)?$")
"""What a relative path may be: ``Type``, ``Type/id``, ``Type/id/_history/vid``, each optionally followed by an
operation (``/$events``) and a query. FHIR ids are ``[A-Za-z0-9-.]{1,64}``; ``.`` and ``..`` are refused,
so no path the client builds can climb out of the base however a server resolves it."""
_ENCODED = re.compile(r"%2[eEfF]|%5[cC]|\\")
"""Percent-encoded dots, slashes and backslashes, and a raw backslash: refused anywhere in a path, because servers and
proxies disagree about whether to decode them before resolving dot segments."""


class FhirClient:
    """Reads and writes one organization's FHIR API for one feature, with tokens from the auth service.

    A bearer token is only ever sent to URLs under the organization's own FHIR base. A 401 with a
    cached token invalidates it and retries once with a new one.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenClient,
        organization: Organization,
        feature: str,
        *,
        base: str | None = None,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self.organization = organization
        self.feature = feature
        self.base = (base or organization.fhir_base_url).rstrip("/")
        """The organization's FHIR base, or another base of the organization's (writeback's output routes)."""

    def url(self, path: str) -> str:
        """The absolute URL ``path`` names, exactly as it will be sent, or ``UpstreamRejected`` if that is not
        under this organization's FHIR base. The check is made on the URL after httpx has resolved its dot
        segments, which is the URL httpx sends; a prefix test of the string is not enough
        (``Observation/../../../tenant-b/fhir/Observation/1`` starts with the base and leaves it)."""
        absolute = path.startswith(("http://", "https://"))
        if not absolute and not RELATIVE.match(path.lstrip("/")):
            raise UpstreamRejected(f"{self.organization.id}: refusing a FHIR path that is not Type[/id]", status=0)
        raw = path if absolute else f"{self.base}/{path.lstrip('/')}"
        target, base = httpx.URL(raw), httpx.URL(self.base)
        base_path = base.path.rstrip("/")
        if (
            _ENCODED.search(raw.split("?", 1)[0])
            or (target.scheme, target.host, target.port, target.userinfo) != (base.scheme, base.host, base.port, b"")
            or not (target.path == base_path or target.path.startswith(base_path + "/"))
        ):
            raise UpstreamRejected(f"refusing to send {self.organization.id}'s token outside its FHIR base", status=0)
        return str(target)

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
    ) -> tuple[list[dict[str, Any]], bool, int]:
        """Every page of a search, following ``next`` links (only under this organization's base), up to
        ``max_pages``. Returns the matches, whether the search was complete, and the pages fetched."""
        found: list[dict[str, Any]] = []
        path: str | None = resource_type
        query: list[tuple[str, str]] | None = params
        for page in range(1, max_pages + 1):
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
                return found, True, page
        return found, False, max_pages

    async def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT a resource at its id."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        path = f"{resource['resourceType']}/{resource['id']}"
        return _located(await self._send("PUT", path, json=resource, headers=headers), path)

    async def create(self, resource: dict[str, Any], *, if_none_exist: str | None = None) -> dict[str, Any]:
        """POST a resource; with ``if_none_exist`` a conditional create (an existing match is returned).

        Servers may ignore ``Prefer: return=representation`` and answer 201 (or 200 for a conditional match)
        without a body: then the ``Location`` header says where the resource is, and the result holds at
        least its ``resourceType`` and ``id``."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        path = resource["resourceType"]
        return _located(await self._send("POST", path, json=resource, headers=headers), path)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return _body(await self._send(method, path, **kwargs), path)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.url(path)
        org = self.organization.id
        headers = {"Accept": FHIR_JSON, **kwargs.pop("headers", {})}
        for attempt in (1, 2):
            token = await self._tokens.token(org, self.feature)
            headers["Authorization"] = f"Bearer {token.value.get_secret_value()}"
            try:
                response = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:  # a TLS handshake that failed says why (no secret is in the reason)
                why = failure(exc, self.organization)
                raise UpstreamUnavailable(f"{org} FHIR {method} {_kind(path)}: {why}") from exc
            if response.status_code == 401 and attempt == 1:
                self._tokens.invalidate(org, self.feature)
                continue
            break
        if response.status_code >= 500 or response.status_code == 429:
            raise UpstreamUnavailable(
                f"{org} FHIR {method} {_kind(path)} answered {response.status_code}",
                retry_after_s=retry_after_s(response.headers.get("retry-after")),
            )
        if response.status_code >= 400:
            kind = _kind(path)
            raise UpstreamRejected(
                f"{org} FHIR {method} {kind} answered {response.status_code}",
                status=response.status_code,
                resource_type=kind if kind != "resource" else None,
            )
        return response


def _body(response: httpx.Response, path: str) -> dict[str, Any]:
    """A 2xx answer's JSON object; an empty body is ``{}``. Anything else is a permanent refusal: a server
    (or a proxy in front of it) that answers HTML or a JSON list will answer the same way next time."""
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        what = "a body that is not a JSON object" if body is not None else "a body that is not JSON"
        raise UpstreamRejected(
            f"FHIR {response.request.method} {_kind(path)} answered {response.status_code} with {what}",
            status=response.status_code,
        )
    return body


_LOCATION = re.compile(r"/([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?/?$")


def _located(response: httpx.Response, path: str) -> dict[str, Any]:
    """What a create or update answered: the resource, or, without a body, ``resourceType`` and ``id`` read
    from ``Location`` (``Content-Location``)."""
    body = _body(response, path)
    if isinstance(body.get("resourceType"), str) and isinstance(body.get("id"), str):
        return body
    location = response.headers.get("location") or response.headers.get("content-location") or ""
    match = _LOCATION.search(urlsplit(location).path)
    if match is None:
        raise UpstreamRejected(
            f"FHIR {response.request.method} {_kind(path)} answered {response.status_code} "
            "with neither the resource nor a Location",
            status=response.status_code,
        )
    return {**body, "resourceType": match.group(1), "id": match.group(2)}


def _kind(path: str) -> str:
    """The resource type a path addresses, for messages: ids and query strings may identify a patient."""
    segments = [p for p in urlsplit(path).path.split("/") if p]
    return next((p for p in segments if p[:1].isupper()), "resource")
