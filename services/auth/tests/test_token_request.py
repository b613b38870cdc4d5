"""Token requests against a scripted token endpoint (httpx.MockTransport): docs/design/smart.md D1–D3."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt

from ehrflow_auth.discovery import discover
from ehrflow_auth.keys import load_signing_key
from ehrflow_auth.token_request import RateLimited, parse_token_response, request_token
from ehrflow_devstack.config import generate
from ehrflow_runtime.errors import ConfigurationError, UpstreamRejected, UpstreamUnavailable
from ehrflow_runtime.organizations import Organization

TOKEN_URL = "https://ehr.example.org/auth/token"
SCOPE = "system/*.read system/RiskAssessment.write"


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Organization:
    folder = generate(tmp_path_factory.mktemp("auth")).folder
    pem = folder / "keys" / "org1.pem"
    return Organization.model_validate(
        {
            "id": "org1",
            "name": "n",
            "fhir_base_url": "https://ehr.example.org/fhir",
            "backend_auth": {"client_id": "ehrflow-org1", "keys": [{"file": pem, "kid": "k1", "alg": "RS384"}]},
            "features": {"news2": ["system/*.read", "system/RiskAssessment.write"]},
            "ingest": {"secrets": [{"header": "X", "file": pem}]},
            "review": {"api_key_file": pem},
        }
    )


Script = list[Callable[[httpx.Request], httpx.Response]]


def _client(script: Script, seen: list[dict[str, list[str]]]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(parse_qs(request.content.decode()))
        return script[min(len(seen) - 1, len(script) - 1)](request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def ok(body: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, json=body)


def error(status: int, code: str | None = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json={"error": code} if code else {"detail": "x"})


async def test_form_and_granted_scope(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    script = [ok({"access_token": "t1", "token_type": "Bearer", "expires_in": "600", "scope": "system/*.read"})]
    async with _client(script, seen) as http:
        issued = await request_token(http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE)
    assert (issued.access_token, issued.expires_in, issued.scope) == ("t1", 600, "system/*.read")
    [form] = seen
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == ["system/*.read system/RiskAssessment.write"]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    claims = jwt.decode(
        form["client_assertion"][0], load_signing_key(org.backend_auth.keys[0]), algorithms=["RS384"]
    ).claims
    assert claims["aud"] == TOKEN_URL


async def test_invalid_client_is_retried_once_with_a_fresh_assertion(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    script = [error(401, "invalid_client"), ok({"access_token": "t2", "token_type": "bearer"})]
    async with _client(script, seen) as http:
        issued = await request_token(http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE)
    assert issued.access_token == "t2" and issued.expires_in == 300  # no expires_in: at most 300 s
    assert len(seen) == 2 and seen[0]["client_assertion"] != seen[1]["client_assertion"]


@pytest.mark.parametrize("attempts", [1, 3])
async def test_invalid_client_twice_is_a_configuration_error(org: Organization, attempts: int) -> None:
    """The retry after invalid_client comes on top of the attempt budget, whatever it is."""
    seen: list[dict[str, list[str]]] = []
    key = load_signing_key(org.backend_auth.keys[0])
    async with _client([error(401, "invalid_client")], seen) as http:
        with pytest.raises(ConfigurationError, match="org1"):
            await request_token(http, org, key, TOKEN_URL, scope=SCOPE, attempts=attempts, backoff_s=0)
    assert len(seen) == 2


@pytest.mark.parametrize("code", ["invalid_scope", "unsupported_grant_type", "invalid_request"])
async def test_configuration_errors_are_not_retried(org: Organization, code: str) -> None:
    seen: list[dict[str, list[str]]] = []
    async with _client([error(400, code)], seen) as http:
        with pytest.raises(ConfigurationError, match=code):
            await request_token(http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE)
    assert len(seen) == 1


async def test_server_errors_back_off_and_sign_again(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    script = [error(503), error(502), ok({"access_token": "t3", "token_type": "bearer", "expires_in": 60})]
    async with _client(script, seen) as http:
        issued = await request_token(
            http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE, attempts=3
        )
    assert issued.access_token == "t3"
    assert len({s["client_assertion"][0] for s in seen}) == 3


async def test_server_errors_exhaust_attempts(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    async with _client([error(500)], seen) as http:
        with pytest.raises(UpstreamUnavailable):
            await request_token(
                http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE, attempts=2
            )
    assert len(seen) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "bearer"},
        {"access_token": "", "token_type": "bearer"},
        {"access_token": "t", "token_type": "mac"},
        {"access_token": "t"},
        ["not", "an", "object"],
    ],
)
def test_bad_token_responses_are_rejected(body: object) -> None:
    with pytest.raises(UpstreamRejected):
        parse_token_response("org1", body, "s")


def _discovery(doc: dict[str, object] | None, status: int = 200) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/fhir/.well-known/smart-configuration"
        return httpx.Response(status, content=json.dumps(doc).encode())

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_discovery_finds_the_token_endpoint(org: Organization) -> None:
    doc = {
        "token_endpoint": TOKEN_URL,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
    }
    async with _discovery(doc) as http:
        assert (await discover(http, org)).token_endpoint == TOKEN_URL


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"token_endpoint": "https://attacker.example.net/token"}, "foreign host"),
        ({}, "no token_endpoint"),
        ({"token_endpoint": TOKEN_URL, "grant_types_supported": ["authorization_code"]}, "client_credentials"),
        (
            {"token_endpoint": TOKEN_URL, "token_endpoint_auth_methods_supported": ["client_secret_basic"]},
            "private_key_jwt",
        ),
        ({"token_endpoint": TOKEN_URL, "token_endpoint_auth_signing_alg_values_supported": ["RS256"]}, "RS384"),
    ],
)
async def test_discovery_misconfigurations(org: Organization, doc: dict[str, object], message: str) -> None:
    async with _discovery(doc) as http:
        with pytest.raises(ConfigurationError, match=message):
            await discover(http, org)


async def test_discovery_override_sends_nothing(org: Organization, tmp_path: Path) -> None:
    pinned = org.model_copy(
        update={
            "backend_auth": org.backend_auth.model_copy(update={"token_endpoint": "https://login.example.com/token"})
        }
    )

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        assert (await discover(http, pinned)).token_endpoint == "https://login.example.com/token"


async def test_client_secret_basic_sends_no_assertion(org: Organization, tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr:et\n")
    basic = org.model_copy(
        update={
            "backend_auth": org.backend_auth.model_copy(
                update={"method": "client_secret_basic", "client_secret_file": secret, "keys": ()}
            )
        }
    )
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "b1", "token_type": "bearer"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        issued = await request_token(http, basic, None, TOKEN_URL, scope=SCOPE)
    assert issued.access_token == "b1"
    [request] = seen
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"ehrflow-org1:s3cr%3Aet").decode()
    assert "client_assertion" not in parse_qs(request.content.decode())


async def test_omitted_scope_and_fixed_audience(org: Organization) -> None:
    quirky = org.model_copy(
        update={
            "backend_auth": org.backend_auth.model_copy(
                update={"scope_style": "omit", "assertion_audience": "https://vendor.example.com/oauth2/token"}
            )
        }
    )
    seen: list[dict[str, list[str]]] = []
    async with _client([ok({"access_token": "t", "token_type": "bearer"})], seen) as http:
        await request_token(
            http, quirky, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=quirky.scope_for("news2")
        )
    [form] = seen
    assert "scope" not in form
    claims = jwt.decode(
        form["client_assertion"][0], load_signing_key(org.backend_auth.keys[0]), algorithms=["RS384"]
    ).claims
    assert claims["aud"] == "https://vendor.example.com/oauth2/token"


async def test_short_429_waits_and_retries(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    limited = lambda _: httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "rate_limited"})  # noqa: E731
    script = [limited, ok({"access_token": "t4", "token_type": "bearer"})]
    async with _client(script, seen) as http:
        issued = await request_token(http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE)
    assert issued.access_token == "t4" and len(seen) == 2


async def test_long_429_is_reported_with_its_wait(org: Organization) -> None:
    seen: list[dict[str, list[str]]] = []
    limited = lambda _: httpx.Response(429, headers={"Retry-After": "42"})  # noqa: E731
    async with _client([limited], seen) as http:
        with pytest.raises(RateLimited) as caught:
            await request_token(http, org, load_signing_key(org.backend_auth.keys[0]), TOKEN_URL, scope=SCOPE)
    assert caught.value.retry_after_s == 42 and len(seen) == 1


async def test_a_thousand_requests_with_retries_never_repeat_a_jti(org: Organization) -> None:
    """docs/design/smart.md C3: every attempt, retries included, signs a new assertion."""
    jtis: list[str] = []
    key = load_signing_key(org.backend_auth.keys[0])

    def handle(request: httpx.Request) -> httpx.Response:
        assertion = parse_qs(request.content.decode())["client_assertion"][0]
        jtis.append(jwt.decode(assertion, key, algorithms=["RS384"]).claims["jti"])
        if len(jtis) % 3 == 1:  # every third attempt fails and is retried
            return httpx.Response(503)
        return httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        while len(jtis) < 1000:
            await request_token(http, org, key, TOKEN_URL, scope=SCOPE, attempts=2, backoff_s=0)
    assert len(jtis) >= 1000 and len(set(jtis)) == len(jtis)
