"""Bus records from parsed notifications: one ``NotificationReceived`` per event, with its dedupe names."""

from __future__ import annotations

from ehrflow_contracts import NotificationReceived
from ehrflow_contracts.fhir import is_generated_by_ehrflow
from ehrflow_ingest.notifications import (
    ParsedEvent,
    ParsedNotification,
    dedupe_key,
    event_patient,
    resource_version,
    version_key,
)
from ehrflow_runtime.organizations import Organization


def normalized(
    org: Organization,
    note: ParsedNotification,
    event: ParsedEvent,
    key: str,
    *,
    recovered: bool = False,
    declared_subscription: str | None = None,
) -> NotificationReceived:
    """The bus record of one parsed event (resource bodies dropped where the organization keeps ids only).
    Validated in one call from plain values (nested models built first would each be validated again)."""
    return NotificationReceived.model_validate(
        {
            "organization_id": org.id,
            "correlation_id": key,
            "subscription": note.subscription,
            "topic": note.topic,
            "flavour": note.flavour,
            "notification_type": note.notification_type,
            "content_level": note.content_level,
            "event_number": event.event_number,
            "events_since_subscription_start": note.events_since_subscription_start,
            "focus": {"reference": event.focus, "original": event.focus_original} if event.focus_original else None,
            "additional_context": [{"reference": r, "original": o} for r, o in event.additional_context],
            "patient": event_patient(event),
            "resource": event.resource if org.ingest.keep_resources else None,
            "interaction": event.interaction,
            "declared_subscription": declared_subscription,
            "dedupe_key": key,
            "recovered": recovered,
        }
    )


def alias_of(org_id: str, event: ParsedEvent, key: str, scope: str) -> str | None:
    """The event's second dedupe name, its resource version in its subscription, when that is not already
    its key: what recovery for the same subscription would call it."""
    version = resource_version(event)
    alias = version_key(org_id, event.focus, version, scope) if event.focus and version else None
    return alias if alias != key else None


def bus_records(
    org: Organization,
    note: ParsedNotification,
    raw: bytes,
    *,
    scope: str = "",
    recovered: bool = False,
    declared_subscription: str | None = None,
) -> tuple[list[tuple[ParsedEvent, NotificationReceived]], dict[str, str], list[ParsedEvent]]:
    """Bus records (with the parsed event each came from), their aliases, and the echoes left out.
    ``scope`` names the subscription (``tracking_store.tracking_key``) for version-based keys; ``declared_subscription`` is
    the declared subscription whose route the notification came in on (workflows may trigger on it).

    An event listed twice in one notification (same dedupe key) is one record: claimed twice in one
    call, its second claim would find its own pending claim and answer 503 on every retry."""
    records, aliases, echoes = [], {}, []
    keys: set[str] = set()
    for index, event in enumerate(note.events):
        if is_generated_by_ehrflow(event.resource):
            echoes.append(event)
            continue
        key = dedupe_key(org.id, note, event, raw, index, scope)
        if key in keys:
            continue
        keys.add(key)
        if alias := alias_of(org.id, event, key, scope):
            aliases[key] = alias
        records.append(
            (event, normalized(org, note, event, key, recovered=recovered, declared_subscription=declared_subscription))
        )
    return records, aliases, echoes
