"""Notification bodies as real senders write them (docs/design/notifications.md), for tests and benchmarks."""

from __future__ import annotations

import uuid
from typing import Any

BASE = "http://ehr.example.org/fhir"


def observation(obs_id: str = "obs-1", patient: str = "Patient/p1", version: str = "1") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "meta": {"versionId": version},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85353-1"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": "2026-11-21T08:00:00+00:00",
    }


def r4_backport(
    kind: str = "event-notification",
    *,
    content: str = "full-resource",
    events: list[tuple[int | str, dict[str, Any]]] | None = None,
    since: int | str | None = None,
    subscription: str = "sub-1",
    status: str = "active",
) -> dict[str, Any]:
    """An R4 backport notification (Parameters status), as SEKMET and HAPI send it."""
    events = events if events is not None else ([(1, observation())] if kind == "event-notification" else [])
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/{subscription}"}},
        {"name": "topic", "valueCanonical": "https://ehrflow.dev/fhir/SubscriptionTopic/vital-signs-recorded"},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {
            "name": "events-since-subscription-start",
            "valueString": str(since if since is not None else (events[-1][0] if events else 0)),
        },
    ]
    entries: list[dict[str, Any]] = []
    for number, resource in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": "2026-11-21T08:00:01.1234567+00:00"},
        ]
        if content != "empty":
            ref = f"{resource['resourceType']}/{resource['id']}"
            parts.append({"name": "focus", "valueReference": {"reference": f"{BASE}/{ref}"}})
            parts.append(
                {
                    "name": "additional-context",
                    "valueReference": {"reference": f"{BASE}/{resource['subject']['reference']}"},
                }
            )
            if content == "full-resource":
                entries.append(
                    {
                        "fullUrl": f"{BASE}/{ref}",
                        "resource": resource,
                        "request": {"method": "PUT", "url": ref},
                        "response": {"status": "200"},
                    }
                )
        params.append({"name": "notification-event", "part": parts})
    status_entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {"resourceType": "Parameters", "id": str(uuid.uuid4()), "parameter": params},
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": "2026-11-21T08:00:01Z",
        "entry": [status_entry, *entries],
    }


def subscription_status_bundle(
    *, r5: bool = False, events: list[tuple[int | str, dict[str, Any]]] | None = None, kind: str = "event-notification"
) -> dict[str, Any]:
    """An R4B backport (history) or R5 (subscription-notification) bundle with a SubscriptionStatus."""
    events = events if events is not None else [(7, observation())]
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": kind,
        "eventsSinceSubscriptionStart": events[-1][0] if events else 0,
        "subscription": {"reference": f"{BASE}/Subscription/sub-9"},
        "topic": "https://ehrflow.dev/fhir/SubscriptionTopic/vital-signs-recorded",
        "notificationEvent": [
            {"eventNumber": n, "focus": {"reference": f"{r['resourceType']}/{r['id']}"}} for n, r in events
        ],
    }
    entries = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for _, r in events]
    return {
        "resourceType": "Bundle",
        "type": "subscription-notification" if r5 else "history",
        "entry": [{"fullUrl": "urn:uuid:status", "resource": status}, *entries],
    }
