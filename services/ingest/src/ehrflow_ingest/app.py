"""Ingest's HTTP surface: the per-organization webhook EHRs post Subscription notifications to.

Answers: 200 only after every event of the notification is on Kafka (acks=all); 400 with the raw
bytes quarantined; 401; 404 unknown organization; 413; 415 XML; 503 when the broker does not confirm.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import Counter
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ehrflow_contracts import NotificationQuarantined, NotificationReceived, SubscriptionSignal
from ehrflow_contracts.events import Reference
from ehrflow_contracts.fhir import is_generated_by_ehrflow
from ehrflow_ingest import classic
from ehrflow_ingest.channels import Publishers
from ehrflow_ingest.dedupe import Claims, Dedupe
from ehrflow_ingest.notifications import (
    NotificationError,
    ParsedNotification,
    dedupe_key,
    event_patient,
    parse_topic_notification,
)
from ehrflow_ingest.sender_auth import SenderSecrets
from ehrflow_runtime.organizations import Organization, Registry
from ehrflow_runtime.outcomes import operation_outcome

log = logging.getLogger("ehrflow.ingest")
tracer = trace.get_tracer("ehrflow.ingest")

RECEIVED = Counter(
    "ehrflow_ingest_notifications_total", "Notifications by organization and outcome", ["organization", "outcome"]
)
EVENTS = Counter("ehrflow_ingest_events_published_total", "Events published", ["organization", "kind"])
DUPLICATES = Counter(
    "ehrflow_ingest_duplicates_total", "Duplicate events answered 200 and not published", ["organization"]
)
DEDUPE_SKIPPED = Counter(
    "ehrflow_ingest_dedupe_skipped_total", "Events published without dedupe (Redis down)", ["organization"]
)
ECHOES = Counter("ehrflow_ingest_echoes_dropped_total", "Echoes of ehrflow's own writes dropped", ["organization"])

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
NOTIFICATION_BUNDLES = ("history", "subscription-notification")


@dataclass(frozen=True)
class IngestContext:
    registry: Registry
    secrets: SenderSecrets
    publishers: Publishers
    max_body_bytes: int
    publish_timeout_s: float
    dedupe: Dedupe | None = None


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


def _events(org: Organization, note: ParsedNotification, raw: bytes) -> tuple[list[NotificationReceived], int]:
    events, echoes = [], 0
    for index, event in enumerate(note.events):
        if is_generated_by_ehrflow(event.resource):
            echoes += 1
            continue
        key = dedupe_key(org.id, note, event, raw, index)
        events.append(
            NotificationReceived(
                organization_id=org.id,
                correlation_id=key,
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
                resource=event.resource if org.ingest.keep_resources else None,
                interaction=event.interaction,
                dedupe_key=key,
            )
        )
    return events, echoes


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
        if not ctx.secrets.authenticate(org_id, request.headers, raw):  # before parsing anything
            RECEIVED.labels(org_id, "unauthenticated").inc()
            log.warning("sender authentication failed", extra={"org": org_id})
            return operation_outcome(
                401, "security", "sender authentication failed", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            note = _parse(request, raw, content_type)
        except NotificationError as exc:
            return await _reject(request, org_id, raw, content_type, str(exc))
        try:
            if note.notification_type in ("handshake", "heartbeat", "query-status"):
                return await _signal(org_id, note)
            return await _publish_events(org, note, raw)
        except ValidationError as exc:  # a value the parser let through that an event cannot hold
            err = exc.errors()[0]
            reason = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            return await _reject(request, org_id, raw, content_type, reason)

    async def _signal(org_id: str, note: ParsedNotification) -> Response:
        signal = SubscriptionSignal(
            organization_id=org_id,
            correlation_id=note.subscription or org_id,
            subscription=note.subscription,
            topic=note.topic,
            notification_type=note.notification_type,
            status=note.status,
            events_since_subscription_start=note.events_since_subscription_start,
        )
        try:
            await _confirm(ctx, [ctx.publishers.signals.publish(signal, key=f"{org_id}|{note.subscription}".encode())])
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)
        EVENTS.labels(org_id, note.notification_type).inc()
        return _accepted(org_id, note, 1)

    async def _publish_events(org: Organization, note: ParsedNotification, raw: bytes) -> Response:
        events, echoes = _events(org, note, raw)
        if echoes:
            ECHOES.labels(org.id).inc(echoes)
        claims = await _claim(org.id, [e.dedupe_key for e in events])
        if claims.in_flight:
            return operation_outcome(
                503, "transient", "this notification is being recorded right now; retry", headers={"Retry-After": "1"}
            )
        if claims.duplicates:
            DUPLICATES.labels(org.id).inc(len(claims.duplicates))
        new = set(claims.new)
        fresh = [e for e in events if e.dedupe_key in new]
        sends = [
            ctx.publishers.events.publish(
                e, key=f"{org.id}|{e.patient or (e.focus and e.focus.original) or ''}".encode()
            )
            for e in fresh
        ]
        try:
            await _confirm(ctx, sends)
        except BrokerUnavailable as exc:
            await _release(claims.new)
            return _unavailable(org.id, exc)
        await _settle(claims.new)
        EVENTS.labels(org.id, "event").inc(len(fresh))
        return _accepted(org.id, note, len(fresh), duplicates=len(claims.duplicates))

    async def _claim(org_id: str, keys: list[str]) -> Claims:
        """Dedupe claims; without Redis every event is new (Kafka is the record, consumers are idempotent)."""
        if ctx.dedupe is None or not keys:
            return Claims(new=keys)
        try:
            return await ctx.dedupe.claim(keys)
        except RedisError:
            DEDUPE_SKIPPED.labels(org_id).inc(len(keys))
            log.warning("dedupe unavailable; publishing without it", extra={"org": org_id, "events": len(keys)})
            return Claims(new=keys)

    async def _settle(keys: list[str]) -> None:
        if ctx.dedupe is not None:
            with contextlib.suppress(RedisError):  # the claim expires by itself
                await ctx.dedupe.confirm(keys)

    async def _release(keys: list[str]) -> None:
        if ctx.dedupe is not None:
            with contextlib.suppress(RedisError):
                await ctx.dedupe.release(keys)

    def _unavailable(org_id: str, exc: Exception) -> Response:
        RECEIVED.labels(org_id, "broker-unavailable").inc()
        log.error("broker did not confirm", extra={"org": org_id, "reason": str(exc)})
        return operation_outcome(503, "transient", "event store unavailable; retry later", headers={"Retry-After": "5"})

    def _accepted(org_id: str, note: ParsedNotification, published: int, duplicates: int = 0) -> Response:
        RECEIVED.labels(org_id, "accepted").inc()
        log.info(
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
            await _confirm(ctx, [ctx.publishers.quarantine.publish(quarantined, key=org_id.encode())])
        except BrokerUnavailable as exc:
            return _unavailable(org_id, exc)
        RECEIVED.labels(org_id, "rejected").inc()
        log.warning(
            "notification rejected", extra={"org": org_id, "reason": reason, "quarantine_id": quarantined.event_id}
        )
        return operation_outcome(400, "invalid", reason)

    return [
        Route("/v1/notify/{org}", notify, methods=["POST"]),
        Route("/v1/notify/{org}/{type}/{id}", notify, methods=["PUT", "DELETE"]),
    ]
