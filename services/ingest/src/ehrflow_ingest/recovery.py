"""Fetching what a subscription missed from the organization's own FHIR API (docs/design/notifications.md item 24).

1. ``Subscription/{id}/$events?eventsSinceNumber=a&eventsUntilNumber=b`` where the EHR offers it: the exact
   events, with their numbers. An EHR that answers 400/404/405/501 is remembered as not offering it.
2. Otherwise a search of the subscription's criteria with ``_lastUpdated=ge{last event seen − overlap}``,
   every page. The overlap absorbs clock skew; what was already delivered is recognised by its resource
   version in the dedupe store and not published again.

Recovered events are published marked ``recovered``. Tokens come from the auth service (feature
``subscriptions``); the FHIR client sends them nowhere but the organization's own FHIR base.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl

from ehrflow_contracts.events import Flavour
from ehrflow_contracts.fhir import is_generated_by_ehrflow
from ehrflow_ingest.metrics import RECOVERED, RECOVERIES
from ehrflow_ingest.notifications import NotificationError, ParsedEvent, ParsedNotification, parse_topic_notification
from ehrflow_ingest.recording import Recorder
from ehrflow_ingest.records import bus_records
from ehrflow_ingest.tracking import Gap, SubscriptionState, instant, iso
from ehrflow_runtime.errors import UpstreamRejected
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import Organization

log = logging.getLogger("ehrflow.ingest.recovery")

FEATURE = "subscriptions"
"""The organization feature whose scopes recovery and the subscription manager use."""
NO_EVENTS_OPERATION = (400, 404, 405, 501)
FLAVOURS = ("r4-backport", "r4b-backport", "r5", "r4-classic")
BACKPORT_FILTER = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"


class CannotRecover(Exception):
    """Nothing tells what this subscription watches (a classic ping on the shared route, say)."""


@dataclass(frozen=True)
class Recovered:
    published: int
    complete: bool
    newest: float | None
    """The newest ``meta.lastUpdated`` among what was found: the next search starts there."""
    requests: int = 0
    """FHIR requests made: each counts against the organization's ``recovery_per_minute``."""
    gaps: tuple[Gap, ...] = ()
    """The gaps this recovery covered; others (over the budget) stay open for the next pass."""


def criteria_of(subscription: dict[str, Any]) -> str | None:
    """What a Subscription resource watches, as a search: a classic ``criteria``, or the backport filter."""
    criteria = subscription.get("criteria")
    filters = [
        ext.get("valueString")
        for ext in (subscription.get("_criteria") or {}).get("extension", [])
        if ext.get("url") == BACKPORT_FILTER
    ]
    candidate = next((f for f in filters if isinstance(f, str)), None) or criteria
    if isinstance(candidate, str) and "?" in candidate and candidate[:1].isupper():
        return candidate
    return None


def search_params(criteria: str, since: float, *, page_size: int) -> tuple[str, list[tuple[str, str]]]:
    resource_type, _, query = criteria.partition("?")
    params = [
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("_lastUpdated", "_count", "_sort")
    ]
    return resource_type, [
        *params,
        ("_lastUpdated", f"ge{iso(since)}"),
        ("_sort", "_lastUpdated"),  # oldest first, so a truncated search can go on from the newest it saw
        ("_count", str(page_size)),
    ]


def search_notification(state: SubscriptionState, resources: Sequence[dict[str, Any]]) -> ParsedNotification:
    """Search results as a notification of full-resource events, for the same bus records as deliveries."""
    flavour = cast(Flavour, state.flavour if state.flavour in FLAVOURS else "r4-classic")
    events = tuple(
        ParsedEvent(
            event_number=None,
            focus=f"{r['resourceType']}/{r['id']}",
            focus_original=f"{r['resourceType']}/{r['id']}",
            additional_context=(),
            resource=r,
        )
        for r in resources
        if isinstance(r.get("resourceType"), str) and isinstance(r.get("id"), str)
    )
    return ParsedNotification(
        flavour=flavour,
        notification_type="event-notification",
        subscription=state.subscription,
        topic=None,
        status=None,
        events_since_subscription_start=None,
        events=events,
    )


class Recovery:
    def __init__(
        self,
        fhir_for: Callable[[str], FhirClient],
        recorder: Recorder,
        *,
        overlap_s: float = 60.0,
        page_size: int = 100,
        max_pages: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fhir_for = fhir_for
        self._recorder = recorder
        self._overlap = overlap_s
        self._page_size = page_size
        self._max_pages = max_pages
        self._clock = clock
        self._no_events_operation: set[str] = set()

    def most_requests(self, gaps: int) -> int:
        """The most FHIR requests one recovery of ``gaps`` gaps (0: a sweep) may make: one ``$events`` per
        gap, or the subscription's criteria and the pages of a search."""
        return gaps + 1 + self._max_pages

    async def gaps(
        self, org: Organization, state: SubscriptionState, gaps: Sequence[Gap], *, budget: int | None = None
    ) -> Recovered:
        """Recover numbered gaps: ``$events`` when offered, else a search since the last event before them.
        ``budget`` bounds the FHIR requests made (one per ``$events`` gap, one per search page)."""
        if state.subscription and org.id not in self._no_events_operation:
            try:
                return await self._events_operation(org, state, gaps, budget)
            except UpstreamRejected as exc:
                if exc.status not in NO_EVENTS_OPERATION:
                    raise
                self._no_events_operation.add(org.id)
                log.info("the EHR does not offer $events; recovering by search", extra={"org": org.id})
                budget = None if budget is None else budget - 1
        since = min((g.since for g in gaps if g.since is not None), default=state.last_event_at)
        found = await self.search(org, state, since if since is not None else self._clock() - 3600, budget=budget)
        return Recovered(found.published, found.complete, found.newest, found.requests, tuple(gaps))

    async def _events_operation(
        self, org: Organization, state: SubscriptionState, gaps: Sequence[Gap], budget: int | None
    ) -> Recovered:
        fhir = self._fhir_for(org.id)
        published = 0
        todo = tuple(gaps if budget is None else gaps[: max(0, budget)])
        for gap in todo:
            bundle = await fhir.read(
                f"{state.subscription}/$events?eventsSinceNumber={gap.first}&eventsUntilNumber={gap.last}"
            )
            try:
                note = parse_topic_notification(bundle)
            except NotificationError as exc:
                RECOVERIES.labels(org.id, "$events", "unreadable").inc()
                raise UpstreamRejected(f"{org.id} $events answer is not a notification: {exc}", status=502) from None
            records, aliases, _ = bus_records(
                org, note, b"", scope=state.key, recovered=True, declared_subscription=state.name
            )
            recorded = await self._recorder.events(org.id, [r for _, r in records], aliases, kind="recovered")
            published += len(recorded.published)
        RECOVERIES.labels(org.id, "$events", "ok" if len(todo) == len(gaps) else "partial").inc()
        RECOVERED.labels(org.id).inc(published)
        return Recovered(published, len(todo) == len(gaps), None, len(todo), todo)

    async def search(
        self, org: Organization, state: SubscriptionState, since: float, *, budget: int | None = None
    ) -> Recovered:
        """Publish everything the subscription's criteria match that changed since ``since`` (less the overlap),
        in at most ``budget`` FHIR requests (reading the subscription's criteria counts as one)."""
        criteria, asked = await self._criteria(org, state)
        pages = self._max_pages if budget is None else min(self._max_pages, budget - asked)
        if pages <= 0:
            return Recovered(0, False, None, asked)
        resource_type, params = search_params(criteria, since - self._overlap, page_size=self._page_size)
        resources, complete, fetched = await self._fhir_for(org.id).search_all(resource_type, params, max_pages=pages)
        wanted = [r for r in resources if not is_generated_by_ehrflow(r)]
        note = search_notification(state, wanted)
        records, aliases, _ = bus_records(
            org, note, b"", scope=state.key, recovered=True, declared_subscription=state.name
        )
        recorded = await self._recorder.events(org.id, [r for _, r in records], aliases, kind="recovered")
        newest = max((t for r in wanted if (t := instant((r.get("meta") or {}).get("lastUpdated")))), default=None)
        RECOVERIES.labels(org.id, "search", "ok" if complete else "truncated").inc()
        RECOVERED.labels(org.id).inc(len(recorded.published))
        log.info(
            "recovered by search",
            extra={
                "org": org.id,
                "subscription": state.key,
                "found": len(wanted),
                "published": len(recorded.published),
                "complete": complete,
            },
        )
        return Recovered(len(recorded.published), complete, newest, asked + fetched)

    async def _criteria(self, org: Organization, state: SubscriptionState) -> tuple[str, int]:
        """What the subscription watches, and how many FHIR requests it took to find out (0 or 1)."""
        declared = next((s for s in org.ingest.subscriptions if s.name == state.name), None)
        if declared is not None:
            return declared.criteria, 0
        if state.subscription:
            try:
                criteria = criteria_of(await self._fhir_for(org.id).read(state.subscription))
            except UpstreamRejected as exc:
                if exc.status not in (404, 410):
                    raise
                criteria = None  # the EHR does not know it (any more)
            if criteria:
                return criteria, 1
        RECOVERIES.labels(org.id, "search", "no-criteria").inc()
        raise CannotRecover(f"{org.id} {state.key}: nothing says what this subscription watches")
