"""Ingest's HTTP surface: the per-organization webhook EHRs post Subscription notifications to.

Answers: 200 only after every event of the notification is on Kafka (acks=all); 400 with the raw
bytes quarantined; 401; 404 unknown organization; 413; 415 XML; 503 when the broker does not confirm.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ehrflow_contracts import NotificationQuarantined, NotificationReceived, SubscriptionSignal
from ehrflow_contracts.events import Reference
from ehrflow_contracts.fhir import is_generated_by_ehrflow
from ehrflow_ingest.channels import Publishers
from ehrflow_ingest.notifications import (
    NotificationError,
    ParsedNotification,
    dedupe_key,
    event_patient,
    parse_topic_notification,
)
from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_runtime.organizations import Registry
from ehrflow_runtime.outcomes import operation_outcome

log = logging.getLogger("ehrflow.ingest")
tracer = trace.get_tracer("ehrflow.ingest")

RECEIVED = Counter(
    "ehrflow_ingest_notifications_total", "Notifications by organization and outcome", ["organization", "outcome"]
)
EVENTS = Counter("ehrflow_ingest_events_published_total", "Events published", ["organization", "kind"])
ECHOES = Counter("ehrflow_ingest_echoes_dropped_total", "Echoes of ehrflow's own writes dropped", ["organization"])

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


@dataclass(frozen=True)
class IngestContext:
    registry: Registry
    secrets: SenderSecrets
    publishers: Publishers
    max_body_bytes: int
    publish_timeout_s: float


class BrokerUnavailable(Exception):
    pass


async def _confirm(ctx: IngestContext, sends: Sequence[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged every record (acks=all), or fail within the timeout."""
    try:
        await asyncio.wait_for(asyncio.gather(*sends), ctx.publish_timeout_s)
    except Exception as exc:  # timeout, connection or Kafka error: the sender must retry
        raise BrokerUnavailable(type(exc).__name__) from exc


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


def _events(org_id: str, note: ParsedNotification, raw: bytes) -> tuple[list[NotificationReceived], int]:
    events, echoes = [], 0
    for event in note.events:
        if is_generated_by_ehrflow(event.resource):
            echoes += 1
            continue
        events.append(
            NotificationReceived(
                organization_id=org_id,
                correlation_id=dedupe_key(org_id, note, event, raw),
                subscription=note.subscription,
                topic=note.topic,
                flavour=note.flavour,
                notification_type=note.notification_type,
                content_level=note.content_level,
                event_number=event.event_number,
                events_since_subscription_start=note.events_since_subscription_start,
                focus=Reference(reference=event.focus, original=event.focus_original) if event.focus_original else None,
                additional_context=tuple(Reference(reference=r, original=o) for r, o in event.additional_context),
                patient=event_patient(event),
                resource=event.resource,
                dedupe_key=dedupe_key(org_id, note, event, raw),
            )
        )
    return events, echoes


def routes(ctx: IngestContext) -> list[Route]:
    async def notify(request: Request) -> Response:
        org_id = request.path_params["org"]
        with tracer.start_as_current_span(
            "ingest notification",
            context=extract(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={"ehrflow.organization": org_id},
        ):
            response = await _handle(request, org_id)
            trace.get_current_span().set_attribute("http.response.status_code", response.status_code)
            return response

    async def _handle(request: Request, org_id: str) -> Response:
        if org_id not in ctx.registry:
            RECEIVED.labels("unknown", "unknown-organization").inc()
            return operation_outcome(404, "not-found", "unknown organization")
        if not ctx.secrets.authenticate(org_id, request.headers):
            RECEIVED.labels(org_id, "unauthenticated").inc()
            log.warning("sender authentication failed", extra={"org": org_id})
            return operation_outcome(
                401, "security", "sender authentication failed", headers={"WWW-Authenticate": "Bearer"}
            )
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
        try:
            if content_type and content_type not in JSON_TYPES:
                raise NotificationError(f"content type '{content_type}' is not FHIR JSON")
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                raise NotificationError(f"body is not valid JSON ({type(exc).__name__})") from None
            note = parse_topic_notification(body)
        except NotificationError as exc:
            return await _reject(request, org_id, raw, content_type, str(exc))

        if note.notification_type in ("handshake", "heartbeat", "query-status"):
            signal = SubscriptionSignal(
                organization_id=org_id,
                correlation_id=note.subscription or org_id,
                subscription=note.subscription,
                topic=note.topic,
                notification_type=note.notification_type,
                status=note.status,
                events_since_subscription_start=note.events_since_subscription_start,
            )
            sends = [ctx.publishers.signals.publish(signal, key=f"{org_id}|{note.subscription}".encode())]
            kind: str = note.notification_type
        else:
            events, echoes = _events(org_id, note, raw)
            if echoes:
                ECHOES.labels(org_id).inc(echoes)
            sends = [
                ctx.publishers.events.publish(
                    e, key=f"{org_id}|{e.patient or (e.focus and e.focus.original) or ''}".encode()
                )
                for e in events
            ]
            kind = "event"
        try:
            await _confirm(ctx, sends)
        except BrokerUnavailable as exc:
            RECEIVED.labels(org_id, "broker-unavailable").inc()
            log.error("broker did not confirm", extra={"org": org_id, "reason": str(exc)})
            return operation_outcome(
                503, "transient", "event store unavailable; retry later", headers={"Retry-After": "5"}
            )
        EVENTS.labels(org_id, kind).inc(len(sends))
        RECEIVED.labels(org_id, "accepted").inc()
        log.info(
            "notification accepted",
            extra={
                "org": org_id,
                "type": note.notification_type,
                "subscription": note.subscription,
                "events": len(sends),
                "flavour": note.flavour,
            },
        )
        return operation_outcome(200, "informational", f"accepted {len(sends)} record(s)", severity="information")

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
            await _confirm(ctx, [ctx.publishers.quarantine.publish(quarantined, key=org_id.encode())])
        except BrokerUnavailable:
            RECEIVED.labels(org_id, "broker-unavailable").inc()
            return operation_outcome(
                503, "transient", "event store unavailable; retry later", headers={"Retry-After": "5"}
            )
        RECEIVED.labels(org_id, "rejected").inc()
        log.warning(
            "notification rejected", extra={"org": org_id, "reason": reason, "quarantine_id": quarantined.event_id}
        )
        return operation_outcome(400, "invalid", reason)

    return [Route("/v1/notify/{org}", notify, methods=["POST"])]
