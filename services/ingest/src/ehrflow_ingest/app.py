"""Ingest's HTTP surface: the per-organization webhook EHRs post Subscription notifications to.

Answers: 200 only after every event of the notification is on Kafka (acks=all); 400 with the raw
bytes quarantined; 401; 404 unknown organization; 413; 415 XML; 503 when the broker does not confirm.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ehrflow_contracts import NotificationQuarantined, SubscriptionSignal
from ehrflow_ingest import classic
from ehrflow_ingest.metrics import ECHOES, LATENCY, RECEIVED
from ehrflow_ingest.notifications import NotificationError, ParsedNotification, parse_topic_notification
from ehrflow_ingest.recording import BrokerUnavailable, InFlight, Recorder
from ehrflow_ingest.records import bus_records
from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_ingest.tracker import Tracker
from ehrflow_ingest.tracking_store import tracking_key
from ehrflow_runtime.organizations import Organization, Registry
from ehrflow_runtime.outcomes import operation_outcome

log = logging.getLogger("ehrflow.ingest")
tracer = trace.get_tracer("ehrflow.ingest")

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
NOTIFICATION_BUNDLES = ("history", "subscription-notification")


@dataclass(frozen=True)
class IngestContext:
    registry: Registry
    secrets: SenderSecrets
    recorder: Recorder
    max_body_bytes: int
    tracker: Tracker


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it exceeds ``limit`` (never truncated)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(request: Request, raw: bytes, content_type: str) -> ParsedNotification:
    """Which shape this is, by route, method and body (subscriptions.md item 15)."""
    if content_type and content_type not in JSON_TYPES:
        raise NotificationError(f"content type '{content_type}' is not FHIR JSON")
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotificationError(f"body is not valid JSON ({type(exc).__name__})") from None
    if "type" in request.path_params:
        return classic.at_path(request.method, request.path_params["type"], request.path_params["id"], body)
    if body is None:
        return classic.ping()
    if isinstance(body, dict) and body.get("resourceType") == "Bundle" and body.get("type") in NOTIFICATION_BUNDLES:
        return parse_topic_notification(body)
    return classic.posted_resource(body, request.headers)


def routes(ctx: IngestContext) -> list[Route]:
    async def notify(request: Request) -> Response:
        org_id = request.path_params["org"]
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "ingest notification",
            context=extract(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={"ehrflow.organization": org_id},
        ):
            response = await _handle(request, org_id)
            trace.get_current_span().set_attribute("http.response.status_code", response.status_code)
        LATENCY.labels(str(response.status_code)).observe(time.perf_counter() - started)
        return response

    async def _handle(request: Request, org_id: str) -> Response:
        org = ctx.registry.get(org_id)
        if org is None:
            RECEIVED.labels("unknown", "unknown-organization").inc()
            return operation_outcome(404, "not-found", "unknown organization")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if "xml" in content_type:
            RECEIVED.labels(org_id, "unsupported-media-type").inc()
            return operation_outcome(415, "not-supported", "XML is not supported; send application/fhir+json")
        try:
            raw = await _read_body(request, ctx.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)
        if raw is None:
            RECEIVED.labels(org_id, "too-large").inc()
            return operation_outcome(413, "too-long", f"body exceeds the limit of {ctx.max_body_bytes} bytes")
        name = request.path_params.get("name")
        if not ctx.secrets.authenticate(org_id, request.headers, raw, name):  # before parsing anything
            RECEIVED.labels(org_id, "unauthenticated").inc()
            log.warning("sender authentication failed", extra={"org": org_id})
            return operation_outcome(
                401, "security", "sender authentication failed", headers={"WWW-Authenticate": "Bearer"}
            )
        if name is not None and all(s.name != name for s in org.ingest.subscriptions):
            RECEIVED.labels(org_id, "unknown-subscription").inc()
            return operation_outcome(404, "not-found", "no subscription of this name is declared")
        try:
            note = _parse(request, raw, content_type)
        except NotificationError as exc:
            return await _reject(request, org_id, raw, content_type, str(exc))
        try:
            if note.notification_type in ("handshake", "heartbeat", "query-status"):
                return await _signal(org, name, note)
            return await _publish_events(org, name, note, raw)
        except ValidationError as exc:  # a value the parser let through that an event cannot hold
            err = exc.errors()[0]
            reason = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            return await _reject(request, org_id, raw, content_type, reason)
        except InFlight:
            return operation_outcome(
                503, "transient", "this notification is being recorded right now; retry", headers={"Retry-After": "1"}
            )
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)

    async def _signal(org: Organization, name: str | None, note: ParsedNotification) -> Response:
        await ctx.recorder.signal(
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
        ctx.tracker.notification(org, name, note, ())
        return _accepted(org.id, note, 1)

    async def _publish_events(org: Organization, name: str | None, note: ParsedNotification, raw: bytes) -> Response:
        scope = tracking_key(name, note.subscription) or ""
        records, aliases, echoes = bus_records(org, note, raw, scope=scope)
        if echoes:
            ECHOES.labels(org.id).inc(len(echoes))
        recorded = await ctx.recorder.events(org.id, [r for _, r in records], aliases)
        new_events = [e for e, r in records if r.dedupe_key in recorded.first_seen] + echoes
        ctx.tracker.notification(org, name, note, new_events)
        return _accepted(org.id, note, len(recorded.published), duplicates=recorded.duplicates)

    def _unavailable(org_id: str, exc: Exception) -> Response:
        RECEIVED.labels(org_id, "broker-unavailable").inc()
        log.error("broker did not confirm", extra={"org": org_id, "reason": str(exc)})
        return operation_outcome(503, "transient", "event store unavailable; retry later", headers={"Retry-After": "5"})

    def _accepted(org_id: str, note: ParsedNotification, published: int, duplicates: int = 0) -> Response:
        RECEIVED.labels(org_id, "accepted").inc()
        log.debug(  # a line per notification is a cost at thousands a second; the counters say as much
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
        return operation_outcome(
            200, "informational", f"accepted {published} record(s), {duplicates} duplicate(s)", severity="information"
        )

    async def _reject(request: Request, org_id: str, raw: bytes, content_type: str, reason: str) -> Response:
        """400 with a precise reason; the raw bytes go to the quarantine topic first (nothing is lost)."""
        quarantined = NotificationQuarantined(
            organization_id=org_id,
            correlation_id=org_id,
            reason=reason,
            path=request.url.path,
            content_type=content_type or None,
            body_base64=base64.b64encode(raw).decode(),
        )
        try:
            await ctx.recorder.quarantine(quarantined)
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)
        RECEIVED.labels(org_id, "rejected").inc()
        log.warning(
            "notification rejected", extra={"org": org_id, "reason": reason, "quarantine_id": quarantined.event_id}
        )
        return operation_outcome(400, "invalid", reason)

    return [
        Route("/v1/notify/{org}/sub/{name}", notify, methods=["POST"]),
        Route("/v1/notify/{org}/sub/{name}/{type}/{id}", notify, methods=["PUT", "DELETE"]),
        Route("/v1/notify/{org}", notify, methods=["POST"]),
        Route("/v1/notify/{org}/{type}/{id}", notify, methods=["PUT", "DELETE"]),
    ]
