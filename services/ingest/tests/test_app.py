"""Ingest's webhook with an in-memory sink in place of Kafka: answers, and what reaches each topic."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ehrflow_contracts import topics
from ehrflow_contracts.fhir import SYSTEM_TAG, TAG_GENERATED
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
from ehrflow_devstack.memory_sink import MemorySink
from ehrflow_ingest import classic, limits
from ehrflow_ingest.main import create_app
from ehrflow_ingest.notifications import NotificationError, parse_topic_notification
from ehrflow_ingest.settings import IngestSettings


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cfg = generate(tmp_path_factory.mktemp("ingest-config"))
    write_registry(cfg, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
    registry = yaml.safe_load(cfg.organizations_file.read_text())
    registry["organizations"]["org2"]["ingest"]["keep_resources"] = False  # org2: ids only on the bus
    registry["organizations"]["org1"]["ingest"]["subscriptions"] = [
        {"name": "vitals", "criteria": "Observation?code=http://loinc.org|85353-1"}
    ]
    cfg.organizations_file.write_text(yaml.safe_dump(registry))
    return cfg


class Client:
    def __init__(
        self, http: httpx.AsyncClient, published: dict[str, list[dict[str, Any]]], secrets: dict[str, str]
    ) -> None:
        self.http, self.published, self.secrets = http, published, secrets

    async def post(
        self,
        org: str,
        body: Any,
        *,
        secret_of: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/fhir+json; charset=utf-8",
    ) -> httpx.Response:
        headers = {"Content-Type": content_type, WEBHOOK_HEADER: self.secrets[secret_of or org]}
        content = raw if raw is not None else json.dumps(body).encode()
        return await self.http.post(f"/v1/notify/{org}", content=content, headers=headers)


@pytest.fixture()
async def client(config, tmp_path: Path) -> AsyncIterator[Client]:  # type: ignore[no-untyped-def]
    settings = IngestSettings(
        organizations_file=config.organizations_file,
        max_body_bytes=64 * 1024,
        kafka={"create_topics": False, "publish_timeout_s": 2},
        redis_url="redis://127.0.0.1:1/0",  # no Redis: dedupe is skipped, every event is published
    )
    sink = MemorySink()
    app = create_app(settings, sink=sink)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield Client(http, sink.published, {o: config.webhook_secret(o) for o in ("org1", "org2")})


async def test_event_notification_is_published_and_answered_200(client: Client) -> None:
    response = await client.post("org1", samples.r4_backport())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "OperationOutcome"
    [event] = client.published[topics.NOTIFICATION_RECEIVED]
    assert event["organization_id"] == "org1"
    assert event["focus"] == {"reference": "Observation/obs-1", "original": f"{samples.BASE}/Observation/obs-1"}
    assert event["patient"] == "Patient/p1" and event["content_level"] == "full-resource"
    assert event["resource"]["id"] == "obs-1"


async def test_one_record_per_event(client: Client) -> None:
    body = samples.r4_backport(events=[(1, samples.observation("a")), (2, samples.observation("b", "Patient/p2"))])
    assert (await client.post("org1", body)).status_code == 200
    assert [e["patient"] for e in client.published[topics.NOTIFICATION_RECEIVED]] == ["Patient/p1", "Patient/p2"]


async def test_handshake_goes_to_the_control_topic_only(client: Client) -> None:
    assert (await client.post("org2", samples.r4_backport("handshake", status="requested"))).status_code == 200
    assert client.published[topics.NOTIFICATION_RECEIVED] == []
    [signal] = client.published[topics.SUBSCRIPTION_SIGNAL]
    assert (signal["organization_id"], signal["notification_type"], signal["status"]) == (
        "org2",
        "handshake",
        "requested",
    )


async def test_another_organizations_secret_is_refused_and_nothing_is_published(client: Client) -> None:
    response = await client.post("org1", samples.r4_backport(), secret_of="org2")
    assert response.status_code == 401
    assert response.json()["issue"][0]["code"] == "security"
    assert all(not records for records in client.published.values())


async def test_missing_secret_is_refused(client: Client) -> None:
    response = await client.http.post("/v1/notify/org1", json=samples.r4_backport())
    assert response.status_code == 401


async def test_unknown_organization(client: Client) -> None:
    response = await client.http.post("/v1/notify/org9", json=samples.r4_backport())
    assert response.status_code == 404


async def test_unparseable_json_is_400_and_quarantined(client: Client) -> None:
    raw = b'{"resourceType": "Bundle", "entry": [ '
    response = await client.post("org1", None, raw=raw)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["issue"][0]["diagnostics"]
    [kept] = client.published[topics.NOTIFICATION_QUARANTINED]
    assert base64.b64decode(kept["body_base64"]) == raw and kept["organization_id"] == "org1"
    assert (kept["body_bytes"], kept["truncated"]) == (len(raw), False)
    assert client.published[topics.NOTIFICATION_RECEIVED] == []


async def test_an_ids_only_organization_quarantines_size_and_hash_not_the_body(client: Client) -> None:
    raw = b'{"resourceType": "Patient", "name": [{"family": "Doe"'
    assert (await client.post("org2", None, raw=raw)).status_code == 400
    [kept] = client.published[topics.NOTIFICATION_QUARANTINED]
    assert kept["body_base64"] is None
    assert (kept["body_bytes"], kept["body_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())


def test_limits_that_cannot_fit_on_the_bus_stop_ingest_at_start_up(config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be at most kafka.max_message_bytes"):
        IngestSettings(organizations_file=config.organizations_file, max_body_bytes=16 * 1024 * 1024)
    with pytest.raises(ValueError, match="must be at most kafka.max_message_bytes"):
        IngestSettings(organizations_file=config.organizations_file, kafka={"max_message_bytes": 4 * 1024 * 1024})


async def test_a_body_that_starts_with_a_utf8_byte_order_mark_is_read(client: Client) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(samples.r4_backport(events=[(7, samples.observation("bom"))])).encode()
    response = await client.post("org1", None, raw=raw)
    assert response.status_code == 200, response.text
    [record] = client.published[topics.NOTIFICATION_RECEIVED]
    assert record["focus"]["reference"] == "Observation/bom"


async def test_wrong_shape_is_400_with_a_precise_message(client: Client) -> None:
    response = await client.post("org1", {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {}}]})
    assert response.status_code == 400
    assert "searchset" in response.json()["issue"][0]["diagnostics"]
    assert len(client.published[topics.NOTIFICATION_QUARANTINED]) == 1


async def test_xml_is_415(client: Client) -> None:
    response = await client.post("org1", None, raw=b"<Bundle/>", content_type="application/fhir+xml")
    assert response.status_code == 415


async def test_oversized_body_is_413_with_the_limit(client: Client) -> None:
    response = await client.post("org1", None, raw=b" " * (64 * 1024 + 1))
    assert response.status_code == 413
    assert str(64 * 1024) in response.json()["issue"][0]["diagnostics"]


async def test_echo_of_our_own_write_is_dropped(client: Client) -> None:
    ours = samples.observation()
    ours["meta"]["tag"] = [{"system": SYSTEM_TAG, "code": TAG_GENERATED}]
    assert (await client.post("org1", samples.r4_backport(events=[(3, ours)]))).status_code == 200
    assert client.published[topics.NOTIFICATION_RECEIVED] == []


async def _send(client: Client, method: str, path: str, body: bytes = b"", **headers: str) -> httpx.Response:
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: client.secrets["org1"], **headers}
    return await client.http.request(method, path, content=body, headers=headers)


def _one_event(client: Client) -> dict[str, Any]:
    [event] = client.published[topics.NOTIFICATION_RECEIVED]
    return event


async def test_classic_put_of_a_bare_resource(client: Client) -> None:
    body = json.dumps(samples.observation("o1")).encode()
    assert (await _send(client, "PUT", "/v1/notify/org1/Observation/o1", body)).status_code == 200
    event = _one_event(client)
    assert (event["flavour"], event["interaction"], event["focus"]["reference"]) == (
        "r4-classic",
        "update",
        "Observation/o1",
    )
    assert event["resource"]["id"] == "o1" and event["patient"] == "Patient/p1"


async def test_classic_put_with_an_empty_body_and_delete(client: Client) -> None:
    assert (await _send(client, "PUT", "/v1/notify/org1/Encounter/e1")).status_code == 200
    assert (await _send(client, "DELETE", "/v1/notify/org1/Encounter/e1")).status_code == 200
    put, delete = client.published[topics.NOTIFICATION_RECEIVED]
    assert (put["focus"]["reference"], put["resource"], put["content_level"]) == ("Encounter/e1", None, "id-only")
    assert (delete["interaction"], delete["focus"]["reference"]) == ("delete", "Encounter/e1")


async def test_empty_post_is_a_ping_and_each_ping_counts(client: Client) -> None:
    for _ in range(2):
        assert (await _send(client, "POST", "/v1/notify/org1")).status_code == 200
    first, second = client.published[topics.NOTIFICATION_RECEIVED]
    assert first["content_level"] == "empty" and first["focus"] is None
    assert first["dedupe_key"] != second["dedupe_key"]  # two pings are two changes, never duplicates


async def test_medplum_posts_a_bare_resource_and_an_empty_delete(client: Client) -> None:
    body = json.dumps(samples.observation("o2")).encode()
    created = await _send(client, "POST", "/v1/notify/org1", body, **{"X-Medplum-Interaction": "create"})
    deleted = await _send(client, "POST", "/v1/notify/org1", b"{}", **{"X-Medplum-Interaction": "delete"})
    assert (created.status_code, deleted.status_code) == (200, 200)
    create, delete = client.published[topics.NOTIFICATION_RECEIVED]
    assert (create["interaction"], create["focus"]["reference"]) == ("create", "Observation/o2")
    assert delete["interaction"] == "delete"


async def test_a_searchset_bundle_is_one_event_per_resource(client: Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": samples.observation("a")}, {"resource": samples.observation("b")}],
    }
    assert (await _send(client, "POST", "/v1/notify/org1", json.dumps(bundle).encode())).status_code == 200
    assert [e["focus"]["reference"] for e in client.published[topics.NOTIFICATION_RECEIVED]] == [
        "Observation/a",
        "Observation/b",
    ]


async def test_put_whose_body_is_another_resource_is_400_and_kept(client: Client) -> None:
    body = json.dumps(samples.observation("o3")).encode()
    response = await _send(client, "PUT", "/v1/notify/org1/Patient/o3", body)
    assert response.status_code == 400 and "Patient" in response.json()["issue"][0]["diagnostics"]
    assert len(client.published[topics.NOTIFICATION_QUARANTINED]) == 1


@pytest.mark.parametrize("rid", ["../../../org1/fhir/Observation/x", "..", "a/b", "x%2F..", 7])
async def test_a_resource_id_that_is_not_a_fhir_id_is_400_and_publishes_no_event(client: Client, rid: Any) -> None:
    """An id becomes a path of a request made with the organization's token (recovery, inference): one
    that climbs (``../../../org1/fhir/…``) was accepted with 200 for org2 and pointed at org1's base."""
    body = json.dumps({**samples.observation("o4"), "id": rid}).encode()
    response = await _send(client, "POST", "/v1/notify/org1", body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["diagnostics"] == "a resource's resourceType or id is not a FHIR type or id"
    assert client.published[topics.NOTIFICATION_RECEIVED] == []
    assert len(client.published[topics.NOTIFICATION_QUARANTINED]) == 1


@pytest.mark.parametrize("rid", ["..", "."])
def test_a_classic_path_whose_id_is_dots_is_refused(rid: str) -> None:
    """httpx resolves such a path before sending; a sender that does not reaches ``at_path`` with it."""
    with pytest.raises(NotificationError, match="is not a FHIR Type/id"):
        classic.at_path("DELETE", "Observation", rid, None)


async def test_one_included_resource_named_by_many_events_is_413_and_publishes_nothing(client: Client) -> None:
    """Each event's record carries a copy of its focus: a 0.52 MB body made 402 MB of records. Here the
    body limit is 64 KiB: a 20 KB Observation named by 10 events would put 200 KB on the bus."""
    big = samples.observation("big")
    big["note"] = [{"text": "x" * 20_000}]
    body = samples.r4_backport(events=[(n, big) for n in range(1, 11)])
    body["entry"] = body["entry"][:2]  # the resource is included once
    response = await client.post("org1", body)
    assert response.status_code == 413
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "would copy" in diagnostics and f"at most {64 * 1024} are accepted" in diagnostics
    assert client.published[topics.NOTIFICATION_RECEIVED] == []


def test_a_notification_listing_more_events_than_the_limit_is_too_costly() -> None:
    events = [(n, samples.observation(f"o{n}")) for n in range(1, 1002)]
    note = parse_topic_notification(samples.r4_backport(content="id-only", events=events))
    with pytest.raises(limits.TooCostly, match="^the notification lists 1001 events; at most 1000 are accepted$"):
        limits.check(note, max_events=1000, max_bus_bytes=8 * 1024 * 1024)
    limits.check(note, max_events=1001, max_bus_bytes=8 * 1024 * 1024)


async def test_ids_only_organization_keeps_resources_off_the_bus(client: Client) -> None:
    assert (await client.post("org2", samples.r4_backport())).status_code == 200
    event = _one_event(client)
    assert event["resource"] is None and event["focus"]["reference"] == "Observation/obs-1"
    assert event["patient"] == "Patient/p1"  # still keyed by patient, from the additional context


async def test_a_declared_subscription_has_its_own_route_for_every_shape(client: Client) -> None:
    ping = await _send(client, "POST", "/v1/notify/org1/sub/vitals")
    put = await _send(
        client, "PUT", "/v1/notify/org1/sub/vitals/Observation/o9", json.dumps(samples.observation("o9")).encode()
    )
    topic = await _send(client, "POST", "/v1/notify/org1/sub/vitals", json.dumps(samples.r4_backport()).encode())
    assert [r.status_code for r in (ping, put, topic)] == [200, 200, 200]
    assert [e["flavour"] for e in client.published[topics.NOTIFICATION_RECEIVED]] == [
        "r4-classic",
        "r4-classic",
        "r4-backport",
    ]
    # Workflows may trigger on the route an event came in on; the shared route names none.
    assert {e["declared_subscription"] for e in client.published[topics.NOTIFICATION_RECEIVED]} == {"vitals"}
    assert (await client.post("org1", samples.r4_backport(subscription="sub-2"))).status_code == 200
    assert client.published[topics.NOTIFICATION_RECEIVED][-1]["declared_subscription"] is None


async def test_an_undeclared_subscription_route_is_404_and_publishes_nothing(client: Client) -> None:
    for org, name in (("org1", "other"), ("org2", "vitals")):  # org2 declares nothing
        secret = {WEBHOOK_HEADER: client.secrets[org]}
        response = await _send(
            client, "POST", f"/v1/notify/{org}/sub/{name}", json.dumps(samples.r4_backport()).encode(), **secret
        )
        assert response.status_code == 404
        assert response.json()["issue"][0]["diagnostics"] == "no subscription of this name is declared"
    assert client.published[topics.NOTIFICATION_RECEIVED] == []


async def test_methods_and_paths_the_webhook_does_not_take_are_405_and_404(client: Client) -> None:
    assert (await client.http.get("/v1/notify/org1")).status_code == 405
    assert (await client.http.post("/v1/notify/org1/Observation/o-1", content=b"{}")).status_code == 405
    assert (await client.http.put("/v1/notify/org1", content=b"{}")).status_code == 405
    assert (await client.http.post("/v1/notify/org1/a/b/c", content=b"{}")).status_code == 404


async def _call_raw(app: Any, headers: dict[str, str], receive: Any) -> tuple[int, dict[str, Any]]:
    """Call the ASGI app with our own ``receive``, as a slow or silent client would feed it."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/notify/org1",
        "raw_path": b"/v1/notify/org1",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8002),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


async def test_a_sender_without_the_header_secret_is_refused_before_its_body_is_read(config) -> None:  # type: ignore[no-untyped-def]
    app = create_app(
        IngestSettings(organizations_file=config.organizations_file, redis_url="redis://127.0.0.1:1/0"),
        sink=MemorySink(),
    )
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(3600)  # a body that never comes
        return {"type": "http.request", "body": b""}

    status, answer = await _call_raw(app, {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: "wrong"}, receive)
    assert (status, reads) == (401, 0)
    assert answer["issue"][0]["diagnostics"] == "sender authentication failed"


async def test_a_body_that_does_not_arrive_in_time_is_408(config) -> None:  # type: ignore[no-untyped-def]
    app = create_app(
        IngestSettings(
            organizations_file=config.organizations_file, redis_url="redis://127.0.0.1:1/0", body_timeout_s=0.2
        ),
        sink=MemorySink(),
    )

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.request", "body": b""}

    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: config.webhook_secret("org1")}
    status, answer = await asyncio.wait_for(_call_raw(app, headers, receive), 10)
    assert status == 408 and answer["issue"][0]["diagnostics"] == "the body did not arrive within 0.2 s"


@pytest.mark.parametrize(("trusted", "expected"), [("127.0.0.1/32", 200), ("10.0.0.0/8", 401)])
async def test_a_client_certificate_forwarded_by_a_trusted_ingress_authenticates(
    config, tmp_path: Path, trusted: str, expected: int
) -> None:  # type: ignore[no-untyped-def]
    """An organization may authenticate its webhooks by the client certificate the ingress verified; the
    forwarded header is believed from the trusted proxy's address only (here the test client's 127.0.0.1)."""
    registry = yaml.safe_load(config.organizations_file.read_text())
    registry["organizations"]["org1"]["ingest"] = {"client_certificates": [{"sha256": "ab" * 32, "subject": "CN=ehr"}]}
    path = config.organizations_file.with_name(f"mtls-{trusted.replace('/', '-')}.yaml")
    path.write_text(yaml.safe_dump(registry))
    settings = IngestSettings(organizations_file=path, redis_url="redis://127.0.0.1:1/0", trusted_proxies=(trusted,))
    sink = MemorySink()
    transport = httpx.ASGITransport(app=create_app(settings, sink=sink))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        forwarded = {"X-Forwarded-Client-Cert": f'Hash={"ab" * 32};Subject="CN=ehr"'}
        answer = await http.post("/v1/notify/org1", json=samples.r4_backport(), headers=forwarded)
        assert answer.status_code == expected
        wrong = {"X-Forwarded-Client-Cert": f'Hash={"cd" * 32};Subject="CN=ehr"'}
        assert (await http.post("/v1/notify/org1", json=samples.r4_backport(), headers=wrong)).status_code == 401
    assert len(sink.published[topics.NOTIFICATION_RECEIVED]) == (1 if expected == 200 else 0)
