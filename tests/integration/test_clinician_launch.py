"""Clinician SMART launches against an Authlib authorization server: every row of docs/design/smart.md G."""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from ehrflow_contracts import DraftProposed, ModelRef, topics
from ehrflow_contracts.fhir import validate
from ehrflow_devstack.config import GeneratedConfig, generate, write_registry
from ehrflow_devstack.kafka_read import wait_for_records
from ehrflow_devstack.parts import start_tansu
from ehrflow_devstack.processes import Process, free_port, http_ok
from ehrflow_devstack.stack import Stack
from ehrflow_runtime.sessions import session_cookie_name as cookie_name

pytestmark = pytest.mark.integration

STATE_TTL_S = 4
RETURN_URL = "https://review.example.org/"


@dataclass
class Browser:
    """A browser on localhost: keeps every cookie it is given (Secure ones too) and sends them all back."""

    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_headers: list[str] = field(default_factory=list)

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = httpx.get(url, headers={"Cookie": header} if header else {}, timeout=20, **kwargs)  # type: ignore[arg-type]
        for raw in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(raw)
            for name, morsel in SimpleCookie(raw.replace("; Partitioned", "")).items():  # 3.11 knows no Partitioned
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def call(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers = {**kwargs.pop("headers", {}), "Cookie": header}  # type: ignore[dict-item]
        return httpx.request(method, url, headers=headers, timeout=20, **kwargs)  # type: ignore[arg-type]


@dataclass
class Env:
    auth: str
    ehr: dict[str, str]  # organization → authorization server base
    config: GeneratedConfig

    def iss(self, org: str) -> str:
        return f"{self.ehr[org]}/fhir"

    def mode(self, org: str, **mode: object) -> None:
        httpx.post(f"{self.ehr[org]}/_test/mode", json=mode).raise_for_status()

    def hits(self, org: str) -> int:
        return int(httpx.get(f"{self.ehr[org]}/_test/requests").json()["requests"])

    def ehr_launch(self, org: str, patient: str, user: str, roles: list[str] | None = None) -> str:
        context = {"patient": patient, "user": user, "roles": roles or []}
        response = httpx.post(f"{self.ehr[org]}/_test/launch", json=context)
        return str(response.json()["launch"])


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("launch")
    auth = f"http://127.0.0.1:{free_port()}"
    started: list[Process] = []
    ehr = {}
    try:
        for org in ("org1", "org2"):
            port = free_port()
            ehr[org] = f"http://127.0.0.1:{port}"
            proc = Process(
                f"as-{org}",
                [
                    sys.executable,
                    "-m",
                    "ehrflow_devstack.smart_as",
                    str(port),
                    "--redirect-uri",
                    f"{auth}/launch/org1/callback",
                    "--redirect-uri",
                    f"{auth}/launch/org2/callback",
                ],
                tmp / f"as-{org}.log",
                ready=lambda base=ehr[org]: http_ok(f"{base}/jwks"),
            )
            proc.start(timeout=60)
            started.append(proc)
        config = generate(tmp / "config")
        write_registry(config, {o: stack.ehrs[o].url for o in ("org1", "org2")})
        registry = yaml.safe_load(config.organizations_file.read_text())
        for org in ("org1", "org2"):
            registry["organizations"][org]["launch"] = {
                "client_id": "ehrflow-review",
                "redirect_uri": f"{auth}/launch/{org}/callback",
                "issuers": [f"{ehr[org]}/fhir"],
                "return_url": RETURN_URL,
                "roles": {
                    "claim": "roles",
                    "map": {"Oncologist": "oncologist", "Attending": "attending"},
                    "users": {"Practitioner/dr-board": ["tumor-board-chair"]},
                },
            }
        config.organizations_file.write_text(yaml.safe_dump(registry))
        proc, _ = stack.start_service(
            "auth",
            tmp / "auth.log",
            url=auth,
            EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
            EHRFLOW_SERVICE_POLICY_FILE=str(config.policy_file),
            EHRFLOW_TOKEN_CACHE_KEY_FILE=str(config.cache_key_file),
            EHRFLOW_LAUNCH_STATE_TTL_S=str(STATE_TTL_S),
            EHRFLOW_LAUNCH_DISCOVERY_TTL_S="0",  # tests change the EHR's SMART configuration between launches
        )
        started.append(proc)
        yield Env(auth, ehr, config)
    finally:
        for p in reversed(started):
            p.stop()


@pytest.fixture(autouse=True)
def well_behaved(env: Env) -> Iterator[None]:
    yield
    for org in env.ehr:
        env.mode(org)


def _to_callback(env: Env, browser: Browser, org: str, *, iss: str | None = None, launch: str | None = None) -> str:
    """Start a launch and let the EHR's authorization server answer; returns our callback URL."""
    params = {k: v for k, v in {"iss": iss, "launch": launch}.items() if v}
    start = browser.get(f"{env.auth}/launch/{org}", params=params)
    assert start.status_code == 302, start.text
    authorize = browser.get(start.headers["location"])
    assert authorize.status_code == 302, authorize.text
    return str(authorize.headers["location"])


def _session_of(browser: Browser, callback: httpx.Response) -> str:
    assert callback.status_code == 302, callback.text
    location = callback.headers["location"]
    assert location.startswith(RETURN_URL + "#session=")
    return str(location.split("#session=", 1)[1])


def _whoami(env: Env, browser: Browser, session: str) -> httpx.Response:
    return browser.call("GET", f"{env.auth}/v1/session", headers={"Authorization": f"Bearer {session}"})


def test_ehr_launch_opens_a_session_for_that_patient_and_user(env: Env) -> None:
    browser = Browser()
    launch = env.ehr_launch("org1", "Patient/p-123", "Practitioner/dr-1")
    start = browser.get(f"{env.auth}/launch/org1", params={"iss": env.iss("org1"), "launch": launch})
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    assert query["response_type"] == "code" and query["client_id"] == "ehrflow-review"
    assert query["redirect_uri"] == f"{env.auth}/launch/org1/callback" and query["aud"] == env.iss("org1")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43 and query["nonce"] and query["launch"] == launch  # state: 256 random bits
    assert {"launch", "openid", "fhirUser"} <= set(query["scope"].split())
    cookie = browser.set_cookie_headers[-1].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=none" in cookie and "partitioned" in cookie
    authorize = browser.get(start.headers["location"])
    session = _session_of(browser, browser.get(authorize.headers["location"]))
    who = _whoami(env, browser, session)
    assert who.status_code == 200
    assert (who.json()["organization"], who.json()["patient"], who.json()["user"]) == (
        "org1",
        "Patient/p-123",
        "Practitioner/dr-1",
    )


def test_standalone_launch_asks_the_ehr_for_a_patient(env: Env) -> None:
    browser = Browser()
    callback_url = _to_callback(env, browser, "org2")
    session = _session_of(browser, browser.get(callback_url))
    assert _whoami(env, browser, session).json()["patient"] == "Patient/default-patient"


@pytest.mark.parametrize("iss", ["https://attacker.example.net/fhir", "ORG2"])
def test_unknown_iss_is_refused_with_zero_outbound_requests(env: Env, iss: str) -> None:
    iss = env.iss("org2") if iss == "ORG2" else iss  # another organization's issuer counts as unknown too
    before = env.hits("org1"), env.hits("org2")
    response = Browser().get(f"{env.auth}/launch/org1", params={"iss": iss, "launch": "x"})
    assert response.status_code == 400 and "iss" in response.json()["error"]
    assert (env.hits("org1"), env.hits("org2")) == before


def test_missing_state(env: Env) -> None:
    browser = Browser()
    callback = _to_callback(env, browser, "org1")
    without_state = callback.replace("state=", "ignored=")
    assert browser.get(without_state).status_code == 400


def test_state_is_single_use(env: Env) -> None:
    browser = Browser()
    callback = _to_callback(env, browser, "org1")
    assert browser.get(callback).status_code == 302
    replay = browser.get(callback)
    assert replay.status_code == 400 and "already used" in replay.json()["error"]


def test_state_expires(env: Env) -> None:
    browser = Browser()
    callback = _to_callback(env, browser, "org1")
    time.sleep(STATE_TTL_S + 1)
    assert browser.get(callback).status_code == 400


def test_state_needs_its_own_browsers_cookie(env: Env) -> None:
    first, second = Browser(), Browser()
    callback = _to_callback(env, first, "org1")
    _to_callback(env, second, "org1")  # the second browser has a launch cookie, just not this one
    refused = second.get(callback)
    assert refused.status_code == 400 and "cookie" in refused.json()["error"]


def test_mix_up_state_of_org1_on_org2s_path_is_refused(env: Env) -> None:
    browser = Browser()
    callback = _to_callback(env, browser, "org1")
    crossed = callback.replace("/launch/org1/callback", "/launch/org2/callback")
    refused = browser.get(crossed)
    assert refused.status_code == 400 and "another organization" in refused.json()["error"]


def test_rfc9207_iss_must_match(env: Env) -> None:
    browser = Browser()
    callback = _to_callback(env, browser, "org1")
    refused = browser.get(callback, params={"iss": env.iss("org2")})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong-key", "signature"),
        ("wrong-nonce", "nonce"),
        ("wrong-audience", "not for this client"),
        ("expired", "expired"),
        ("foreign-user", "fhirUser"),
    ],
)
def test_bad_id_token_is_refused(env: Env, mode: str, reason: str) -> None:
    env.mode("org1", id_token=mode)
    browser = Browser()
    refused = browser.get(_to_callback(env, browser, "org1"))
    assert refused.status_code == 400 and reason in refused.json()["error"]


def test_missing_patient_is_refused(env: Env) -> None:
    env.mode("org1", omit_patient=True)
    browser = Browser()
    refused = browser.get(_to_callback(env, browser, "org1"))
    assert refused.status_code == 400 and "patient" in refused.json()["error"]


def test_no_pkce_s256_aborts_before_the_browser_leaves(env: Env) -> None:
    env.mode("org1", no_s256=True)
    response = Browser().get(f"{env.auth}/launch/org1")
    assert response.status_code == 400 and "S256" in response.json()["error"]


def test_foreign_token_host_aborts(env: Env) -> None:
    env.mode("org1", token_host="https://tokens.attacker.example.net")
    response = Browser().get(f"{env.auth}/launch/org1")
    assert response.status_code == 400 and "another host" in response.json()["error"]


def test_two_launches_in_one_browser_are_two_sessions(env: Env) -> None:
    browser = Browser()
    first = _to_callback(
        env, browser, "org1", iss=env.iss("org1"), launch=env.ehr_launch("org1", "Patient/alpha", "Practitioner/dr-1")
    )
    second = _to_callback(
        env, browser, "org1", iss=env.iss("org1"), launch=env.ehr_launch("org1", "Patient/beta", "Practitioner/dr-1")
    )
    session_a = _session_of(browser, browser.get(first))
    session_b = _session_of(browser, browser.get(second))
    assert session_a != session_b
    assert _whoami(env, browser, session_a).json()["patient"] == "Patient/alpha"
    assert _whoami(env, browser, session_b).json()["patient"] == "Patient/beta"
    stranger = Browser()  # the session id alone, without its cookie, opens nothing
    assert _whoami(env, stranger, session_a).status_code == 401


def test_logout_ends_only_that_session(env: Env) -> None:
    browser = Browser()
    first = _session_of(browser, browser.get(_to_callback(env, browser, "org1")))
    second = _session_of(browser, browser.get(_to_callback(env, browser, "org1")))
    out = browser.call("POST", f"{env.auth}/v1/session/logout", headers={"Authorization": f"Bearer {first}"})
    assert out.status_code == 200
    assert _whoami(env, browser, first).status_code == 401
    assert _whoami(env, browser, second).status_code == 200


def test_introspection_is_for_allowed_services_and_names_the_organization(env: Env) -> None:
    browser = Browser()
    session = _session_of(browser, browser.get(_to_callback(env, browser, "org1")))
    body = {"session": session, "binding": browser.cookies[cookie_name(session)]}

    def ask(service: str) -> httpx.Response:
        return httpx.post(
            f"{env.auth}/internal/v1/sessions/introspect",
            json=body,
            headers={
                "Authorization": f"Bearer {env.config.service_credential(service)}",
                "X-Ehrflow-Service": service,
            },
        )

    allowed = ask("writeback")
    assert allowed.status_code == 200 and allowed.json()["active"] and allowed.json()["organization"] == "org1"
    assert ask("ingest").status_code == 403


def test_launches_and_sessions_are_audited(env: Env, stack: Stack) -> None:
    """Sessions are audited one by one; starts and failures (anyone can cause them) as counted summaries."""
    assert stack.broker
    wanted = {"launch.started", "session.started", "session.ended", "launch.callback-failed", "launch.start-failed"}
    records = wait_for_records(
        stack.broker.url, topics.AUDIT, lambda rs: wanted <= {r["action"] for r in rs}, timeout=30
    )
    started = [r for r in records if r["action"] == "launch.started" and r["organization_id"] == "org1"]
    assert all(r["details"]["count"] >= 1 and r["details"]["kind"] in ("ehr", "standalone") for r in started)
    # A session is a login of the clinician, about the launch's patient, as a FHIR AuditEvent.
    session = next(r for r in records if r["action"] == "session.started" and r["patient"])
    event = validate(session["audit_event"])
    assert (event["type"]["code"], event["subtype"][0]["code"], event["action"]) == ("110114", "110122", "E")
    assert event["agent"][0] == {"requestor": True, "who": {"reference": session["actor"]}}
    assert {"reference": session["patient"]} in [e["what"] for e in event["entity"]]
    assert event["source"]["observer"] == {"display": "ehrflow auth"}


@contextlib.contextmanager
def _own_auth(env: Env, stack: Stack, log: Path, **launch: object) -> Iterator[str]:
    """A second auth service for this module's organizations, with org1's launch settings changed and
    launch discovery cached as in production."""
    registry = yaml.safe_load(env.config.organizations_file.read_text())
    registry["organizations"]["org1"]["launch"].update(launch)
    changed = env.config.organizations_file.with_name(f"own-{uuid.uuid4().hex[:6]}.yaml")
    changed.write_text(yaml.safe_dump(registry))
    proc, url = stack.start_service(
        "auth",
        log,
        EHRFLOW_ORGANIZATIONS_FILE=str(changed),
        EHRFLOW_SERVICE_POLICY_FILE=str(env.config.policy_file),
        EHRFLOW_TOKEN_CACHE_KEY_FILE=str(env.config.cache_key_file),
    )
    try:
        yield url
    finally:
        proc.stop()


def test_the_ehrs_smart_configuration_is_read_once_for_many_launches(env: Env, stack: Stack, tmp_path: Path) -> None:
    """Starting a launch is unauthenticated; each start read the EHR's SMART configuration again."""
    with _own_auth(env, stack, tmp_path / "auth.log") as url:
        before = env.hits("org1")
        for _ in range(5):
            assert Browser().get(f"{url}/launch/org1").status_code == 302
        assert env.hits("org1") == before + 1


async def test_launches_beyond_the_organizations_rate_get_429(env: Env, stack: Stack, tmp_path: Path) -> None:
    assert stack.redis and stack.config
    redis = Redis.from_url(stack.redis.url)
    with _own_auth(env, stack, tmp_path / "auth.log", starts_per_minute=3) as url:
        for key in await redis.keys("ehrflow:auth:launch-rate:org1:*"):  # this module's other launches
            await redis.delete(key)
        await redis.aclose()
        # Three a minute: of seven starts, even across a minute boundary, at most six pass.
        answers = [Browser().get(f"{url}/launch/org1") for _ in range(7)]
        assert {a.status_code for a in answers} == {302, 429}
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "60" and "too many launches" in refused.json()["error"]


@pytest.fixture(scope="module")
def review_api(env: Env, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Writeback's review API trusting this module's auth service (on a broker of its own)."""
    tmp = tmp_path_factory.mktemp("review")
    broker = start_tansu(tmp)
    try:
        proc, url = stack.start_service(
            "writeback",
            tmp / "writeback.log",
            EHRFLOW_ORGANIZATIONS_FILE=str(env.config.organizations_file),
            EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker.url,
            EHRFLOW_AUTH__URL=env.auth,
            EHRFLOW_AUTH__CREDENTIAL_FILE=str(env.config.credentials_dir / "writeback"),
        )
    except BaseException:
        broker.stop()
        raise
    try:
        yield url
    finally:
        proc.stop()
        broker.stop()


async def test_a_session_opens_only_its_organization_and_patient(env: Env, stack: Stack, review_api: str) -> None:
    assert stack.redis and stack.config
    redis = Redis.from_url(stack.redis.url)
    queue = stack.config.review_queue(redis)
    drafts = {}
    for org, patient in (("org1", "Patient/alpha"), ("org1", "Patient/beta"), ("org2", "Patient/alpha")):
        draft_id = uuid.uuid4().hex
        await queue.add(
            DraftProposed(
                organization_id=org,
                correlation_id="c",
                draft_id=draft_id,
                workflow="news2",
                model=ModelRef(name="m", version="1"),
                patient=patient,
                resource={"resourceType": "RiskAssessment"},
                basis=(),
            )
        )
        drafts[(org, patient)] = draft_id
    await redis.aclose()
    browser = Browser()
    callback = _to_callback(
        env, browser, "org1", iss=env.iss("org1"), launch=env.ehr_launch("org1", "Patient/alpha", "Practitioner/dr-1")
    )
    session = _session_of(browser, browser.get(callback))
    auth = {"Authorization": f"Bearer {session}"}

    def review(method: str, path: str, **kwargs: object) -> httpx.Response:
        return browser.call(method, f"{review_api}/v1/orgs/{path}", headers=auth, **kwargs)

    listed = {d["draft_id"] for d in review("GET", "org1/drafts").json()["drafts"]}
    assert drafts[("org1", "Patient/alpha")] in listed and drafts[("org1", "Patient/beta")] not in listed
    assert review("GET", f"org1/drafts/{drafts[('org1', 'Patient/beta')]}").status_code == 404  # another patient
    assert review("GET", "org2/drafts").status_code == 401  # another organization
    assert review("GET", f"org2/drafts/{drafts[('org2', 'Patient/alpha')]}").status_code == 401
    assert review("POST", f"org2/drafts/{drafts[('org2', 'Patient/alpha')]}/approve", json={}).status_code == 401
    approved = review(
        "POST",
        f"org1/drafts/{drafts[('org1', 'Patient/alpha')]}/approve",
        json={"reviewer": "Practitioner/someone-else"},
    )
    assert approved.status_code == 202 and approved.json()["reviewer"] == "Practitioner/dr-1"  # the session's user
    no_cookie = httpx.get(f"{review_api}/v1/orgs/org1/drafts", headers=auth)
    assert no_cookie.status_code == 401  # a session id alone opens nothing


async def test_a_session_whose_user_is_not_a_clinician_can_neither_see_nor_decide(
    env: Env, stack: Stack, review_api: str
) -> None:
    """A ``fhirUser`` of type Patient (RelatedPerson, Person) could become the verifier of an AI RiskAssessment."""
    assert stack.redis and stack.config
    redis = Redis.from_url(stack.redis.url)
    draft_id = uuid.uuid4().hex
    await stack.config.review_queue(redis).add(
        DraftProposed(
            organization_id="org1",
            correlation_id="c",
            draft_id=draft_id,
            workflow="news2",
            model=ModelRef(name="m", version="1"),
            patient="Patient/alpha",
            resource={"resourceType": "RiskAssessment"},
            basis=(),
        )
    )
    await redis.aclose()
    for user in ("Patient/alpha", "RelatedPerson/mum", "Person/p"):
        browser = Browser()
        launch = env.ehr_launch("org1", "Patient/alpha", user)
        session = _session_of(
            browser, browser.get(_to_callback(env, browser, "org1", iss=env.iss("org1"), launch=launch))
        )
        auth = {"Authorization": f"Bearer {session}"}
        listed = browser.call("GET", f"{review_api}/v1/orgs/org1/drafts", headers=auth)
        decided = browser.call("POST", f"{review_api}/v1/orgs/org1/drafts/{draft_id}/approve", headers=auth, json={})
        assert (listed.status_code, decided.status_code) == (403, 403), user
        assert decided.json()["issue"][0]["diagnostics"] == "only a Practitioner or PractitionerRole reviews drafts"


def test_a_sessions_roles_come_from_the_id_token_claim_and_the_organizations_mapping(env: Env) -> None:
    browser = Browser()
    launch = env.ehr_launch("org1", "Patient/p-9", "Practitioner/dr-board", roles=["Oncologist", "Janitor"])
    start = browser.get(f"{env.auth}/launch/org1", params={"iss": env.iss("org1"), "launch": launch})
    authorize = browser.get(start.headers["location"])
    session = _session_of(browser, browser.get(authorize.headers["location"]))
    roles = _whoami(env, browser, session).json()["roles"]
    assert roles == ["oncologist", "tumor-board-chair"], "mapped claim values and the user's own; unknown ones dropped"
