"""Parsing topic-based Subscription notifications (R4 backport, R4B, R5) into normalized events.

Pure functions, no I/O. Tolerant of what real senders do (docs/design/notifications.md items 15–18): counters as
strings or numbers, references in any form, unknown parameters kept out of the way rather than rejected.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Literal, NamedTuple, cast

from ehrflow_contracts.events import ContentLevel, Flavour, NotificationType
from ehrflow_ingest.references import normalize, patient_of

Interaction = Literal["create", "update", "delete"]

NOTIFICATION_TYPES = {"handshake", "heartbeat", "event-notification", "query-status", "query-event"}


class NotificationError(ValueError):
    """The body is not a notification we can accept; the message is the OperationOutcome diagnostics."""


# Named tuples rather than frozen dataclasses: one of each is made per notification, and a frozen
# dataclass is several times slower to make (it sets each field through object.__setattr__).


class ParsedEvent(NamedTuple):
    event_number: int | None
    focus: str | None
    focus_original: str | None
    additional_context: tuple[tuple[str | None, str], ...]
    resource: dict[str, Any] | None
    event_id: str | None = None
    interaction: Interaction | None = None
    timestamp: str | None = None
    """When the sender says the event happened (instant or date, as sent)."""


class ParsedNotification(NamedTuple):
    flavour: Flavour
    notification_type: NotificationType
    subscription: str | None
    topic: str | None
    status: str | None
    events_since_subscription_start: int | None
    events: tuple[ParsedEvent, ...] = ()

    @property
    def content_level(self) -> ContentLevel:
        if any(e.resource is not None for e in self.events):
            return "full-resource"
        if any(e.focus_original for e in self.events):
            return "id-only"
        return "empty"


def _int(value: Any) -> int | None:
    """Counters arrive as JSON numbers or strings."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise NotificationError(f"counter '{value}' is not an integer") from None


def _text(value: Any) -> str | None:
    """A string element, or None: a sender's odd types for optional elements are not worth a rejection."""
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any]:
    """A repeating element, or nothing: a sender's scalar where a list belongs is ignored, not a crash."""
    return value if isinstance(value, list) else []


def _value(param: dict[str, Any]) -> Any:
    """A parameter's ``value[x]``, whatever its type."""
    for key, value in param.items():  # a loop, not next(genexpr): nine of these per notification
        if key.startswith("value"):
            return value
    return None


def _ref_text(value: Any) -> str | None:
    """A reference given as valueReference, valueString, valueUri or valueCanonical."""
    if isinstance(value, dict):
        reference = value.get("reference")
        return reference if isinstance(reference, str) and reference else _identifier_text(value.get("identifier"))
    return value if isinstance(value, str) else None


def _identifier_text(identifier: Any) -> str | None:
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str) and identifier["value"]:
        system = identifier.get("system")
        return f"{system if isinstance(system, str) else ''}|{identifier['value']}"
    return None


def _resources_by_ref(entries: list[Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") and resource.get("id"):
            found[f"{resource['resourceType']}/{resource['id']}"] = resource
    return found


def _from_parameters(status: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """R4 backport: a Parameters resource; names in kebab-case (spec) or camelCase (some senders)."""
    head: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    for param in _list(status.get("parameter")):
        if not isinstance(param, dict):
            continue
        name = param.get("name")
        if name == "subscription":
            head["subscription"] = _ref_text(_value(param))
        elif name == "topic":
            head["topic"] = _value(param)
        elif name == "status":
            head["status"] = _value(param)
        elif name == "type":
            head["type"] = _value(param)
        elif name in ("events-since-subscription-start", "eventsSinceSubscriptionStart"):
            head["events_since"] = _value(param)
        elif name in ("notification-event", "notificationEvent"):
            event: dict[str, Any] = {"context": []}
            for part in _list(param.get("part")):
                pname = part.get("name") if isinstance(part, dict) else None
                if pname in ("event-number", "eventNumber"):
                    event["number"] = _value(part)
                elif pname == "focus":
                    event["focus"] = _ref_text(_value(part))
                elif pname in ("additional-context", "additionalContext"):
                    event["context"].append(_ref_text(_value(part)))
                elif pname == "id":
                    event["id"] = _value(part)
                elif pname == "timestamp":
                    event["timestamp"] = _value(part)
            events.append(event)
    return head, events


def _from_subscription_status(status: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """R4B backport and R5: a SubscriptionStatus resource."""
    head = {
        "subscription": _ref_text(status.get("subscription")),
        "topic": status.get("topic"),
        "status": status.get("status"),
        "type": status.get("type"),
        "events_since": status.get("eventsSinceSubscriptionStart"),
    }
    events = [
        {
            "number": e.get("eventNumber"),
            "focus": _ref_text(e.get("focus")),
            "context": [_ref_text(c) for c in _list(e.get("additionalContext"))],
            "id": e.get("id"),
            "timestamp": e.get("timestamp"),
        }
        for e in _list(status.get("notificationEvent"))
        if isinstance(e, dict)
    ]
    return head, events


def parse_topic_notification(body: Any) -> ParsedNotification:
    """Parse a topic-based notification Bundle; raise NotificationError with a precise message."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise NotificationError("expected a FHIR Bundle (resourceType 'Bundle')")
    bundle_type = body.get("type")
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise NotificationError("Bundle.entry[0] must hold the subscription status")
    status = entries[0].get("resource")
    status_type = status.get("resourceType") if isinstance(status, dict) else None
    flavour: Flavour
    if bundle_type == "history" and status_type == "Parameters":
        flavour, (head, raw_events) = "r4-backport", _from_parameters(status)  # type: ignore[arg-type]
    elif bundle_type == "history" and status_type == "SubscriptionStatus":
        flavour, (head, raw_events) = "r4b-backport", _from_subscription_status(status)  # type: ignore[arg-type]
    elif bundle_type == "subscription-notification" and status_type == "SubscriptionStatus":
        flavour, (head, raw_events) = "r5", _from_subscription_status(status)  # type: ignore[arg-type]
    else:
        raise NotificationError(
            f"Bundle type '{bundle_type}' with entry[0] '{status_type}' is not a subscription notification"
        )
    ntype = head.get("type")
    if not isinstance(ntype, str) or ntype not in NOTIFICATION_TYPES:
        raise NotificationError(
            f"notification type {json.dumps(ntype)[:40]} is not one of {sorted(NOTIFICATION_TYPES)}"
        )
    included = _resources_by_ref(entries[1:])
    events = []
    for raw in raw_events:
        focus = normalize(raw.get("focus"))
        events.append(
            ParsedEvent(
                event_number=_int(raw.get("number")),
                focus=focus,
                focus_original=raw.get("focus"),
                additional_context=tuple((normalize(c), c) for c in raw.get("context") or [] if c),
                resource=included.get(focus) if focus else None,
                event_id=_text(raw.get("id")),
                timestamp=_text(raw.get("timestamp")),
            )
        )
    if ntype == "event-notification" and not events:
        # A sender that lists no notification-event still tells us something happened: one empty event.
        events.append(ParsedEvent(None, None, None, (), None))
    return ParsedNotification(
        flavour=flavour,
        notification_type=cast(NotificationType, ntype),  # checked against NOTIFICATION_TYPES above
        subscription=normalize(head.get("subscription")) or head.get("subscription"),
        topic=_text(head.get("topic")),
        status=_text(head.get("status")),
        events_since_subscription_start=_int(head.get("events_since")),
        events=tuple(events),
    )


def _hashed(org_id: str, basis: str) -> str:
    return hashlib.sha256(f"{org_id}\x1f{basis}".encode()).hexdigest()


def resource_version(event: ParsedEvent) -> str | None:
    """The focus resource's version: ``meta.versionId`` of the included resource, or ``…/_history/N``."""
    meta = event.resource.get("meta") if event.resource else None
    if isinstance(meta, dict):
        version = meta.get("versionId")
        if isinstance(version, str) and version:
            return version
    original = event.focus_original or ""
    if "/_history/" in original:
        return original.rsplit("/_history/", 1)[1].strip("/") or None
    return None


def version_key(org_id: str, focus: str, version: str, scope: str = "") -> str:
    """The dedupe key of one version of one resource within one subscription (``scope``), however it
    reached us: delivered, or recovered for that subscription. Two subscriptions (two topics, say) that
    both carry a version each keep their event."""
    return _hashed(org_id, f"ver:{scope}:{focus}/_history/{version}")


def dedupe_key(
    org_id: str, note: ParsedNotification, event: ParsedEvent, raw_body: bytes, index: int = 0, scope: str = ""
) -> str:
    """Key precedence (docs/design/notifications.md item 22): event id → (subscription, event number, with the focus,
    its version and the event time) → (focus, versionId) → a delete of the focus → hash of the body and the event's place in it. ``Bundle.id`` is
    reused by senders and never used. An event with nothing to recognise it by (an empty ping, an empty
    PUT) is never a duplicate: dropping one would lose a change, while a repeat is harmless."""
    version = resource_version(event)
    if event.event_id:
        basis = f"id:{event.event_id}"
    elif note.subscription and event.event_number is not None:
        # What the event is about rides along: after a sender restart (item 25) the numbers repeat,
        # and a new event 1 must not pass for a re-delivery of the old event 1.
        basis = (
            f"sub:{note.subscription}#{event.event_number}|{event.focus or ''}|{version or ''}|{event.timestamp or ''}"
        )
    elif event.focus and version:
        return version_key(org_id, event.focus, version, scope)
    elif event.focus and event.interaction == "delete":
        basis = f"delete:{event.focus}"
    elif raw_body.strip() and (event.resource is not None or note.flavour != "r4-classic"):
        basis = f"body:{hashlib.sha256(raw_body).hexdigest()}#{index}"
    else:
        basis = f"unique:{uuid.uuid4()}"
    return _hashed(org_id, basis)


def event_patient(event: ParsedEvent) -> str | None:
    from_resource = patient_of(event.resource)
    if from_resource:
        return from_resource
    if event.focus and event.focus.startswith("Patient/"):
        return event.focus
    return next((ref for ref, _ in event.additional_context if ref and ref.startswith("Patient/")), None)
