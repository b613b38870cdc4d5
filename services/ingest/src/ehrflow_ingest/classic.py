"""R4 classic (criteria-based) notifications and bare-resource deliveries (docs/design/notifications.md items 2, 3, 15).

- ``POST {endpoint}`` with an empty body: "something changed" — one empty event; the receiver must look.
- ``PUT {endpoint}/{Type}/{id}`` with the resource (or an empty body: FHIR Works on AWS), or
  ``DELETE {endpoint}/{Type}/{id}`` (HAPI): one event about ``Type/id``.
- ``POST {endpoint}`` with a bare resource (Medplum: ``X-Medplum-Interaction`` says create/update/delete,
  and a delete's body is ``{}``), or a Bundle of another type: one event per resource.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ehrflow_ingest.notifications import Interaction, NotificationError, ParsedEvent, ParsedNotification

_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9\-.]{1,64}$")
"""FHIR's id grammar, less ``.`` and ``..``: an id is later a path segment of a request to the EHR."""


def _notification(events: list[ParsedEvent], subscription: str | None = None) -> ParsedNotification:
    return ParsedNotification(
        flavour="r4-classic",
        notification_type="event-notification",
        subscription=subscription,
        topic=None,
        status=None,
        events_since_subscription_start=None,
        events=tuple(events),
    )


def _event(resource: dict[str, Any] | None, *, focus: str | None, interaction: Interaction | None) -> ParsedEvent:
    return ParsedEvent(
        event_number=None,
        focus=focus,
        focus_original=focus,
        additional_context=(),
        resource=resource,
        interaction=interaction,
    )


def _focus_of(resource: dict[str, Any]) -> str | None:
    """``Type/id`` of a delivered resource; a resource without an id has no focus. A type or id outside
    FHIR's grammar is refused at the door: it would become a path of a request made with a token."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if rid is None:
        return None
    if not (isinstance(rtype, str) and _TYPE.match(rtype) and isinstance(rid, str) and _ID.match(rid)):
        raise NotificationError("a resource's resourceType or id is not a FHIR type or id")
    return f"{rtype}/{rid}"


def ping() -> ParsedNotification:
    """An empty POST: one event without a focus."""
    return _notification([_event(None, focus=None, interaction=None)])


def at_path(method: str, resource_type: str, resource_id: str, body: Any) -> ParsedNotification:
    """``PUT``/``DELETE`` ``{endpoint}/{Type}/{id}``."""
    if not _TYPE.match(resource_type) or not _ID.match(resource_id):
        raise NotificationError(f"'{resource_type}/{resource_id}' is not a FHIR Type/id")
    focus = f"{resource_type}/{resource_id}"
    if method == "DELETE":
        return _notification([_event(None, focus=focus, interaction="delete")])
    if body is None:
        return _notification([_event(None, focus=focus, interaction="update")])
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        raise NotificationError(f"the body is not a {resource_type} resource")
    if body.get("id") not in (None, resource_id):
        raise NotificationError(f"the body's id '{body.get('id')}' differs from the path's '{resource_id}'")
    return _notification([_event({**body, "id": resource_id}, focus=focus, interaction="update")])


def posted_resource(body: Any, headers: Mapping[str, str]) -> ParsedNotification:
    """A bare resource (Medplum) or a non-notification Bundle POSTed to the endpoint."""
    if not isinstance(body, dict):
        raise NotificationError("expected a FHIR resource (a JSON object)")
    subscription = headers.get("x-medplum-subscription") or None
    interaction = headers.get("x-medplum-interaction", "").lower() or None
    if interaction not in (None, "create", "update", "delete"):
        raise NotificationError(f"X-Medplum-Interaction '{interaction}' is not create, update or delete")
    if not body:  # Medplum's delete body
        return _notification([_event(None, focus=None, interaction="delete")], subscription)
    if not isinstance(body.get("resourceType"), str):
        raise NotificationError("the body has no resourceType")
    if body["resourceType"] == "Bundle":
        entries = (
            [e.get("resource") for e in body.get("entry") or [] if isinstance(e, dict)]
            if isinstance(body.get("entry"), list)
            else []
        )
        resources = [r for r in entries if isinstance(r, dict) and r.get("resourceType")]
        if not resources:
            raise NotificationError(f"Bundle type '{body.get('type')}' carries no resources")
        return _notification([_event(r, focus=_focus_of(r), interaction=None) for r in resources], subscription)
    return _notification([_event(body, focus=_focus_of(body), interaction=interaction)], subscription)  # type: ignore[arg-type]
