"""The subscription manager: each organization's declared subscriptions exist on its EHR and stay active.

For every declared subscription (``ingest.subscriptions`` in the organization file) it looks on the EHR for
the one it made (tagged with our code system and the subscription's name, pointing at our endpoint):

- none: create it (status ``requested``; the EHR handshakes and switches it to ``active``);
- ``error`` or ``off`` (an EHR gives up on a receiver after a few failed deliveries): re-activate it and
  ask the recovery worker to backfill everything since the last event seen;
- different from the declaration (endpoint, criteria, secret header, content, heartbeat): update it.

Topics are the EHR's: the manager does not create SubscriptionTopics. Several replicas may run this;
the worker holds a per-organization lock around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ehrflow_ingest.metrics import MANAGED_ACTIVE, REACTIVATIONS
from ehrflow_ingest.tracking import SubscriptionState, request_sweep
from ehrflow_ingest.tracking_store import TrackingStore, tracking_key
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import DeclaredSubscription, Organization
from ehrflow_runtime.settings import read_secret_file

log = logging.getLogger("ehrflow.ingest.subscriptions")

TAG_SYSTEM = "https://ehrflow.dev/fhir/CodeSystem/managed-subscription"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
INACTIVE = ("error", "off")
MANAGED_FIELDS = ("criteria", "_criteria", "channel")


def endpoint_of(public_url: str, org_id: str, name: str) -> str:
    return f"{public_url.rstrip('/')}/v1/notify/{org_id}/sub/{name}"


def desired(decl: DeclaredSubscription, *, endpoint: str, header: str, secret: str) -> dict[str, Any]:
    """The Subscription resource (R4; backport profile when topic-based) a declaration stands for."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "header": [f"{header}: {secret}"]}
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": decl.name}]},
        "status": "requested",
        "reason": f"ehrflow: {decl.name}",
        "channel": channel,
    }
    if decl.topic is None:
        resource["criteria"] = decl.criteria
        if decl.content == "full-resource":
            channel["payload"] = "application/fhir+json"
        return resource
    resource["meta"]["profile"] = [f"{BACKPORT}/backport-subscription"]
    resource["criteria"] = decl.topic
    resource["_criteria"] = {
        "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": decl.criteria}]
    }
    channel["payload"] = "application/fhir+json"
    channel["_payload"] = {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": decl.content}]}
    if decl.heartbeat_s:
        channel["extension"] = [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": decl.heartbeat_s}]
    return resource


def differs(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return any(existing.get(f) != wanted.get(f) for f in MANAGED_FIELDS)


class SubscriptionManager:
    def __init__(
        self,
        fhir_for: Callable[[str], FhirClient],
        store: TrackingStore,
        *,
        public_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fhir_for = fhir_for
        self._store = store
        self._public_url = public_url
        self._clock = clock

    async def reconcile(self, org: Organization) -> None:
        for decl in org.ingest.subscriptions:
            await self._one(org, decl)

    async def _one(self, org: Organization, decl: DeclaredSubscription) -> None:
        secret = (decl.secrets or org.ingest.secrets)[0]  # the first listed secret is the one handed to the EHR
        endpoint = endpoint_of(self._public_url, org.id, decl.name)
        wanted = desired(
            decl, endpoint=endpoint, header=secret.header, secret=read_secret_file(secret.file).get_secret_value()
        )
        fhir = self._fhir_for(org.id)
        found = await fhir.search("Subscription", [("_tag", f"{TAG_SYSTEM}|{decl.name}")])
        mine = [s for s in found if (s.get("channel") or {}).get("endpoint") == endpoint]
        now = self._clock()
        if not mine:
            created = await fhir.create(wanted)
            await self._note(org.id, decl.name, created, now, backfill=False)
            REACTIVATIONS.labels(org.id, "created").inc()
            MANAGED_ACTIVE.labels(org.id, decl.name).set(0)
            log.info("subscription created on the EHR", extra={"org": org.id, "subscription": decl.name})
            return
        if len(mine) > 1:
            log.warning(
                "several subscriptions match; managing the first", extra={"org": org.id, "subscription": decl.name}
            )
        current = mine[0]
        status = current.get("status")
        if status in INACTIVE or differs(current, wanted):
            updated = await fhir.update({**wanted, "id": current["id"]})
            await self._note(org.id, decl.name, updated, now, backfill=status in INACTIVE)
            action = "reactivated" if status in INACTIVE else "updated"
            REACTIVATIONS.labels(org.id, action).inc()
            MANAGED_ACTIVE.labels(org.id, decl.name).set(0)
            log.warning(
                f"subscription {action} on the EHR",
                extra={"org": org.id, "subscription": decl.name, "was": status},
            )
            return
        MANAGED_ACTIVE.labels(org.id, decl.name).set(1 if status == "active" else 0)

    async def _note(self, org_id: str, name: str, subscription: dict[str, Any], now: float, *, backfill: bool) -> None:
        """Remember the EHR's id; after a re-activation, ask for everything since the last event seen."""

        def change(state: SubscriptionState) -> None:
            state.name = name
            state.subscription = f"Subscription/{subscription['id']}"
            state.status = subscription.get("status")
            if backfill:
                request_sweep(state, now)
            elif state.last_event_at is None:
                state.last_event_at = now  # nothing from before the subscription existed can have been missed

        key = tracking_key(name, None)
        assert key is not None
        await self._store.update(org_id, key, change)
