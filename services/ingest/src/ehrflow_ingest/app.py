"""Ingest's HTTP surface: the per-organization webhook EHRs post Subscription notifications to.

Answers: 200 only after every event of the notification is on Kafka (acks=all); 400 with the raw
bytes quarantined; 401; 404 unknown organization; 413; 415 XML; 503 when the broker does not confirm.

The webhook speaks plain ASGI (``ehrflow_runtime.asgi``) and answers with pre-rendered OperationOutcome
bytes: it is the one route that takes every notification of every EHR, and Starlette's request and
response objects were a tenth of its CPU time (docs/benchmarks.md). ``IngestApp`` hands it the requests
whose method and path are plainly a webhook's without going through Starlette's middleware and router
(another ~7 %); everything else, including every 404, 405 and redirect, goes through Starlette, where the
same routes are mounted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.propagate import extract
from pydantic import ValidationError
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ehrflow_contracts import NotificationQuarantined, SubscriptionSignal
from ehrflow_ingest import classic, limits
from ehrflow_ingest.metrics import ECHOES, latency, received
from ehrflow_ingest.notifications import NotificationError, ParsedNotification, parse_topic_notification
from ehrflow_ingest.recording import BrokerUnavailable, InFlight, Recorder
from ehrflow_ingest.records import bus_records
from ehrflow_ingest.sender_auth import FORWARDED_CERT_HEADER, ForwardedCert, SenderSecrets, forwarded_cert
from ehrflow_ingest.tracker import Tracker
from ehrflow_ingest.tracking_store import tracking_key
from ehrflow_runtime.asgi import BodyTooLarge, Disconnected, read_body, request_headers, send_body
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.http_errors import DEPENDENCY_ERRORS
from ehrflow_runtime.live import Live
from ehrflow_runtime.organizations import Organization, Registry
from ehrflow_runtime.outcomes import FHIR_JSON, Severity, outcome_json
from ehrflow_runtime.telemetry import traced

log = logging.getLogger("ehrflow.ingest")
tracer = trace.get_tracer("ehrflow.ingest")

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
NOTIFICATION_BUNDLES = ("history", "subscription-notification")
FHIR_JSON_BYTES = FHIR_JSON.encode()
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        await send_body(send, self.status, self.body, FHIR_JSON_BYTES, self.headers)


def outcome(
    status: int, code: str, diagnostics: str, *, severity: Severity = "error", headers: Mapping[str, str] | None = None
) -> Answer:
    extra = tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    return Answer(status, outcome_json(code, diagnostics, severity=severity), extra)


@lru_cache(maxsize=1024)
def accepted(published: int, duplicates: int) -> Answer:
    """The 200 answer; the few distinct ones are rendered once."""
    return outcome(
        200, "informational", f"accepted {published} record(s), {duplicates} duplicate(s)", severity="information"
    )


class Delivery(NamedTuple):
    """One request to the webhook, as the handler needs it (a tuple: cheaper to make than a dataclass)."""

    org_id: str
    method: str
    path: str
    path_params: Mapping[str, str]
    headers: Mapping[str, str]
    peer: str | None = None
    """The address the request came from (the ingress, behind one)."""

    @property
    def subscription_name(self) -> str | None:
        return self.path_params.get("name")


@dataclass(frozen=True)
class Configured:
    """What ingest builds from the registry; rebuilt when it, or a secret file it names, changes."""

    registry: Registry
    secrets: SenderSecrets
    clients: Mapping[str, FhirClient] = field(default_factory=dict)
    """Per organization, for recovery and the subscription manager (empty without the auth service)."""


@dataclass(frozen=True)
class IngestContext:
    live: Live[Configured]
    recorder: Recorder
    max_body_bytes: int
    tracker: Tracker
    quarantine_max_bytes: int = 256 * 1024
    max_events: int = 1000
    body_timeout_s: float = 30.0
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    """Peers whose ``X-Forwarded-Client-Cert`` is believed (the ingress that verified the client)."""

    def certificate(self, delivery: Delivery) -> ForwardedCert | None:
        """The client certificate a trusted proxy forwarded; from anyone else the header means nothing."""
        if not self.trusted_proxies or delivery.peer is None:
            return None
        try:
            peer = ip_address(delivery.peer)
        except ValueError:
            return None
        if not any(peer in network for network in self.trusted_proxies):
            return None
        return forwarded_cert(delivery.headers.get(FORWARDED_CERT_HEADER))

    @property
    def registry(self) -> Registry:
        return self.live.current.registry

    @property
    def secrets(self) -> SenderSecrets:
        return self.live.current.secrets


def _parse(delivery: Delivery, raw: bytes, content_type: str) -> ParsedNotification:
    """Which shape this is, by route, method and body (docs/design/notifications.md item 15)."""
    if content_type and content_type not in JSON_TYPES:
        raise NotificationError(f"content type '{content_type}' is not FHIR JSON")
    body: Any = None
    if raw.strip():
        try:
            body = from_json(raw[3:] if raw.startswith(UTF8_BOM) else raw)  # FHIR JSON is UTF-8
        except ValueError as exc:
            raise NotificationError(f"body is not valid JSON ({type(exc).__name__})") from None
    params = delivery.path_params
    if "type" in params:
        return classic.at_path(delivery.method, params["type"], params["id"], body)
    if body is None:
        return classic.ping()
    if isinstance(body, dict) and body.get("resourceType") == "Bundle" and body.get("type") in NOTIFICATION_BUNDLES:
        return parse_topic_notification(body)
    return classic.posted_resource(body, delivery.headers)


class Webhook:
    """``/v1/notify/{org}[/sub/{name}][/{type}/{id}]``: one notification in, its events on Kafka, one answer."""

    def __init__(self, ctx: IngestContext) -> None:
        self._ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = request_headers(scope)
        client = scope.get("client")
        delivery = Delivery(
            scope["path_params"]["org"],
            scope["method"],
            scope["path"],
            scope["path_params"],
            headers,
            client[0] if client else None,
        )
        try:
            if traced(headers):  # a span when tracing is on, or to carry the sender's trace onto the records
                with tracer.start_as_current_span(
                    "ingest notification",
                    context=extract(headers),
                    kind=trace.SpanKind.SERVER,
                    attributes={"ehrflow.organization": delivery.org_id},
                ) as span:
                    answer = await self.answer(delivery, receive)
                    span.set_attribute("http.response.status_code", answer.status)
            else:
                answer = await self.answer(delivery, receive)
        except Disconnected:
            return  # the sender went away before its body arrived: nobody to answer, nothing accepted
        except DEPENDENCY_ERRORS as exc:  # as the app's exception handlers answer them: 503, never 500
            answer = _unavailable(delivery.org_id, exc)
        latency(answer.status).observe(time.perf_counter() - started)
        await answer.send(send)

    async def answer(self, delivery: Delivery, receive: Receive) -> Answer:
        ctx, org_id = self._ctx, delivery.org_id
        org = ctx.registry.get(org_id)
        if org is None:
            received("unknown", "unknown-organization").inc()
            return outcome(404, "not-found", "unknown organization")
        content_type = delivery.headers.get("content-type", "").split(";")[0].strip().lower()
        if "xml" in content_type:
            received(org_id, "unsupported-media-type").inc()
            return outcome(415, "not-supported", "XML is not supported; send application/fhir+json")
        name = delivery.subscription_name
        # Unauthenticated work stays small: where header secrets are all there is, a sender without one is
        # refused before a byte of its body is read (a signature needs the body, so signing organizations
        # read it first). A body must arrive within body_timeout_s, or a slow sender holds memory.
        early = ctx.secrets.by_headers_only(org_id)
        certificate = ctx.certificate(delivery)
        if early and not ctx.secrets.authenticate(org_id, delivery.headers, b"", name, certificate):
            return _unauthenticated(org_id)
        try:
            async with asyncio.timeout(ctx.body_timeout_s):
                raw = await read_body(
                    receive, ctx.max_body_bytes, declared_length=delivery.headers.get("content-length")
                )
        except BodyTooLarge:
            received(org_id, "too-large").inc()
            return outcome(413, "too-long", f"body exceeds the limit of {ctx.max_body_bytes} bytes")
        except TimeoutError:
            received(org_id, "too-slow").inc()
            return outcome(408, "timeout", f"the body did not arrive within {ctx.body_timeout_s:g} s")
        if not early and not ctx.secrets.authenticate(org_id, delivery.headers, raw, name, certificate):
            return _unauthenticated(org_id)
        if name is not None and all(s.name != name for s in org.ingest.subscriptions):
            received(org_id, "unknown-subscription").inc()
            return outcome(404, "not-found", "no subscription of this name is declared")
        try:
            note = _parse(delivery, raw, content_type)
            limits.check(note, max_events=ctx.max_events, max_bus_bytes=ctx.max_body_bytes)
        except limits.TooCostly as exc:
            received(org_id, "too-costly").inc()
            log.warning("notification refused: too costly", extra={"org": org_id, "events": len(note.events)})
            return outcome(413, "too-costly", str(exc))
        except NotificationError as exc:
            return await self._reject(delivery, raw, content_type, str(exc))
        try:
            if note.notification_type in ("handshake", "heartbeat", "query-status"):
                return await self._signal(org, name, note)
            return await self._publish_events(org, name, note, raw)
        except ValidationError as exc:  # a value the parser let through that an event cannot hold
            err = exc.errors()[0]
            reason = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            return await self._reject(delivery, raw, content_type, reason)
        except InFlight:
            return outcome(
                503, "transient", "this notification is being recorded right now; retry", headers={"Retry-After": "1"}
            )
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)

    async def _signal(self, org: Organization, name: str | None, note: ParsedNotification) -> Answer:
        await self._ctx.recorder.signal(
            SubscriptionSignal(
                organization_id=org.id,
                correlation_id=note.subscription or org.id,
                subscription=note.subscription,
                topic=note.topic,
                notification_type=note.notification_type,
                status=note.status,
                events_since_subscription_start=note.events_since_subscription_start,
            )
        )
        self._ctx.tracker.notification(org, name, note, ())
        return _accepted(org.id, note, 1)

    async def _publish_events(
        self, org: Organization, name: str | None, note: ParsedNotification, raw: bytes
    ) -> Answer:
        scope = tracking_key(name, note.subscription) or ""
        records, aliases, echoes = bus_records(org, note, raw, scope=scope, declared_subscription=name)
        if echoes:
            ECHOES.labels(org.id).inc(len(echoes))
        recorded = await self._ctx.recorder.events(org.id, [r for _, r in records], aliases)
        new_events = [e for e, r in records if r.dedupe_key in recorded.first_seen] + echoes
        self._ctx.tracker.notification(org, name, note, new_events)
        return _accepted(org.id, note, len(recorded.published), duplicates=recorded.duplicates)

    async def _reject(self, delivery: Delivery, raw: bytes, content_type: str, reason: str) -> Answer:
        """400 with a precise reason; the raw bytes go to the quarantine topic first (nothing is lost)."""
        org_id = delivery.org_id
        org = self._ctx.registry.get(org_id)
        keep = self._ctx.quarantine_max_bytes if org is not None and org.ingest.keep_resources else 0
        quarantined = NotificationQuarantined(
            organization_id=org_id,
            correlation_id=org_id,
            reason=reason,
            path=delivery.path,
            content_type=content_type or None,
            body_base64=base64.b64encode(raw[:keep]).decode() if keep else None,
            body_bytes=len(raw),
            body_sha256=hashlib.sha256(raw).hexdigest(),
            truncated=0 < keep < len(raw),
        )
        try:
            await self._ctx.recorder.quarantine(quarantined)
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)
        received(org_id, "rejected").inc()
        log.warning(
            "notification rejected", extra={"org": org_id, "reason": reason, "quarantine_id": quarantined.event_id}
        )
        return outcome(400, "invalid", reason)


def _unauthenticated(org_id: str) -> Answer:
    received(org_id, "unauthenticated").inc()
    log.warning("sender authentication failed", extra={"org": org_id})
    return outcome(401, "security", "sender authentication failed", headers={"WWW-Authenticate": "Bearer"})


def _unavailable(org_id: str, exc: Exception) -> Answer:
    received(org_id, "broker-unavailable").inc()
    log.error("event store unavailable", extra={"org": org_id, "reason": str(exc) or type(exc).__name__})
    return outcome(503, "transient", "event store unavailable; retry later", headers={"Retry-After": "5"})


def _accepted(org_id: str, note: ParsedNotification, published: int, duplicates: int = 0) -> Answer:
    received(org_id, "accepted").inc()
    if log.isEnabledFor(logging.DEBUG):  # a line per notification is a cost at thousands a second
        log.debug(
            "notification accepted",
            extra={
                "org": org_id,
                "type": note.notification_type,
                "subscription": note.subscription,
                "events": published,
                "duplicates": duplicates,
                "flavour": note.flavour,
            },
        )
    return accepted(published, duplicates)


WEBHOOK_PREFIX = "/v1/notify/"


def routes(webhook: Webhook) -> list[Route]:
    return [
        Route(WEBHOOK_PREFIX + "{org}/sub/{name}", webhook, methods=["POST"]),
        Route(WEBHOOK_PREFIX + "{org}/sub/{name}/{type}/{id}", webhook, methods=["PUT", "DELETE"]),
        Route(WEBHOOK_PREFIX + "{org}", webhook, methods=["POST"]),
        Route(WEBHOOK_PREFIX + "{org}/{type}/{id}", webhook, methods=["PUT", "DELETE"]),
    ]


def webhook_params(method: str, path: str) -> dict[str, str] | None:
    """The path parameters ``routes`` would give a request that is plainly the webhook's, else None (let
    Starlette decide: 404, 405, a trailing-slash redirect). A test holds this to Starlette's own matching."""
    if not path.startswith(WEBHOOK_PREFIX):
        return None
    parts = path[len(WEBHOOK_PREFIX) :].split("/")
    if "" in parts:
        return None
    if method == "POST":
        if len(parts) == 1:
            return {"org": parts[0]}
        if len(parts) == 3 and parts[1] == "sub":
            return {"org": parts[0], "name": parts[2]}
    elif method in ("PUT", "DELETE"):
        if len(parts) == 3:
            return {"org": parts[0], "type": parts[1], "id": parts[2]}
        if len(parts) == 5 and parts[1] == "sub":
            return {"org": parts[0], "name": parts[2], "type": parts[3], "id": parts[4]}
    return None


class IngestApp(Starlette):
    """Ingest's ASGI app: Starlette, with the webhook's own requests handed straight to it."""

    def __init__(self, webhook: Webhook, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (params := webhook_params(scope["method"], scope["path"])) is not None:
            scope["app"] = self
            scope["path_params"] = params
            await self._webhook(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
