"""Recovery's requests to an EHR: ``$events`` for a numbered gap where offered, else a ``_lastUpdated`` search.

Unit tests at the transport boundaries (``httpx.MockTransport`` for the EHR and auth, an in-memory sink
for Kafka). SEKMET has no ``$events``, so this is where its request shape is checked; the search path is
proven against SEKMET in tests/integration/test_ingest_gaps.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ehrflow_contracts import topics
from ehrflow_contracts.fhir import SYSTEM_TAG, TAG_GENERATED
from ehrflow_devstack import samples
from ehrflow_devstack.memory_sink import MemorySink
from ehrflow_devstack.mock_fhir import MockFhir
from ehrflow_ingest.recording import Recorder
from ehrflow_ingest.recovery import CannotRecover, Recovery, criteria_of, search_params
from ehrflow_ingest.tracking import Gap, SubscriptionState, instant
from ehrflow_runtime.organizations import Organization


class EventsEhr(MockFhir):
    """MockFhir plus ``Subscription/{id}/$events``, answering a query-event Bundle for the asked range."""

    offers_events: bool = True

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$events"):
            self.requests.append(request)
            if not self.offers_events:
                return httpx.Response(404, json={"resourceType": "OperationOutcome"})
            first = int(request.url.params["eventsSinceNumber"])
            last = int(request.url.params["eventsUntilNumber"])
            events = [(n, samples.observation(f"obs-{n}")) for n in range(first, last + 1)]
            return httpx.Response(200, json=samples.r4_backport("query-event", events=events, subscription="s1"))
        return super().handle(request)


@pytest.fixture()
def published() -> tuple[Recorder, list[dict[str, Any]]]:
    sink = MemorySink()
    return Recorder(sink, None, publish_timeout_s=2), sink.published[topics.NOTIFICATION_RECEIVED]


def tracked(**kw: Any) -> SubscriptionState:
    return SubscriptionState(organization="org1", key="ref:Subscription/s1", subscription="Subscription/s1", **kw)


async def test_a_gap_is_asked_for_with_events_since_and_until(
    organization: Organization, published: tuple[Recorder, list[dict[str, Any]]]
) -> None:
    recorder, seen = published
    ehr = EventsEhr(base=organization.fhir_base_url)
    recovery = Recovery(lambda _: ehr.client(organization, "subscriptions", "ingest"), recorder)
    result = await recovery.gaps(organization, tracked(), [Gap(first=3, last=4, opened_at=0)])
    [asked] = [r for r in ehr.requests if r.url.path.endswith("$events")]
    assert asked.url.path == "/fhir/Subscription/s1/$events"
    assert (asked.url.params["eventsSinceNumber"], asked.url.params["eventsUntilNumber"]) == ("3", "4")
    assert result.published == 2
    assert sorted((e["event_number"], e["recovered"]) for e in seen) == [(3, True), (4, True)]


async def test_without_events_the_gap_is_searched_since_the_last_event_before_it(
    organization: Organization, published: tuple[Recorder, list[dict[str, Any]]]
) -> None:
    recorder, seen = published
    ehr = EventsEhr(base=organization.fhir_base_url)
    ehr.offers_events = False
    ehr.add({"resourceType": "Subscription", "id": "s1", "criteria": "Observation?code=http://loinc.org|85353-1"})
    missed = samples.observation("missed")
    missed["meta"]["lastUpdated"] = "2026-11-21T09:00:00.000Z"
    echo = samples.observation("ours")
    echo["meta"]["tag"] = [{"system": SYSTEM_TAG, "code": TAG_GENERATED}]
    ehr.add(missed, echo)
    recovery = Recovery(lambda _: ehr.client(organization, "subscriptions", "ingest"), recorder, overlap_s=60)
    since = instant("2026-11-21T08:30:00Z")
    assert since is not None
    gap = Gap(first=3, last=4, opened_at=0, since=since)
    result = await recovery.gaps(organization, tracked(), [gap])
    search = [r for r in ehr.requests if r.url.path == "/fhir/Observation"][0]
    assert search.url.params["code"] == "http://loinc.org|85353-1"
    assert search.url.params["_lastUpdated"] == "ge2026-11-21T08:29:00.000Z"  # 60 s overlap for clock skew
    assert [e["focus"]["reference"] for e in seen] == ["Observation/missed"]  # our own write is not an event
    assert seen[0]["recovered"] is True and seen[0]["resource"]["id"] == "missed"
    assert result.newest == instant("2026-11-21T09:00:00Z")
    # once known not to offer $events, the EHR is not asked again
    await recovery.gaps(organization, tracked(), [gap])
    assert len([r for r in ehr.requests if r.url.path.endswith("$events")]) == 1


async def test_a_subscription_nobody_can_describe_cannot_be_recovered(
    organization: Organization, published: tuple[Recorder, list[dict[str, Any]]]
) -> None:
    recorder, _ = published
    ehr = MockFhir(base=organization.fhir_base_url)
    recovery = Recovery(lambda _: ehr.client(organization, "subscriptions", "ingest"), recorder)
    with pytest.raises(CannotRecover):
        await recovery.search(organization, SubscriptionState(organization="org1", key="route:x"), since=0)
    assert [r.url.path for r in ehr.requests] == []


@pytest.mark.parametrize(
    ("subscription", "criteria"),
    [
        ({"criteria": "Observation?code=x"}, "Observation?code=x"),
        (
            {
                "criteria": "https://example.org/SubscriptionTopic/t",
                "_criteria": {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
                            "valueString": "Encounter?patient=Patient/1",
                        }
                    ]
                },
            },
            "Encounter?patient=Patient/1",
        ),
        ({"criteria": "https://example.org/SubscriptionTopic/t"}, None),
        ({}, None),
    ],
)
def test_what_a_subscription_watches(subscription: dict[str, Any], criteria: str | None) -> None:
    assert criteria_of(subscription) == criteria


def test_search_params_replace_paging_and_time_but_keep_the_criteria() -> None:
    resource_type, params = search_params("Observation?code=a|b&_count=5&_lastUpdated=gt2000", 0.0, page_size=100)
    assert resource_type == "Observation"
    assert params == [
        ("code", "a|b"),
        ("_lastUpdated", "ge1970-01-01T00:00:00.000Z"),
        ("_sort", "_lastUpdated"),
        ("_count", "100"),
    ]


async def test_every_events_call_counts_against_the_budget_and_the_rest_wait(
    organization: Organization, published: tuple[Recorder, list[dict[str, Any]]]
) -> None:
    """One recovery of 300 gaps sent 300 ``$events`` requests while the rate limit counted one."""
    recorder, seen = published
    ehr = EventsEhr(base=organization.fhir_base_url)
    recovery = Recovery(lambda _: ehr.client(organization, "subscriptions", "ingest"), recorder)
    gaps = [Gap(first=n, last=n, opened_at=0) for n in range(2, 602, 2)]
    result = await recovery.gaps(organization, tracked(), gaps, budget=12)
    assert len([r for r in ehr.requests if r.url.path.endswith("$events")]) == 12
    assert (result.requests, result.gaps, result.complete) == (12, tuple(gaps[:12]), False)
    assert len(seen) == 12


async def test_search_pages_and_the_criteria_read_count_against_the_budget(
    organization: Organization, published: tuple[Recorder, list[dict[str, Any]]]
) -> None:
    recorder, _ = published
    ehr = EventsEhr(base=organization.fhir_base_url)
    ehr.add({"resourceType": "Subscription", "id": "s1", "criteria": "Observation?code=x"})
    for n in range(5):
        ehr.add(samples.observation(f"o{n}"))
    recovery = Recovery(lambda _: ehr.client(organization, "subscriptions", "ingest"), recorder)
    spent = await recovery.search(organization, tracked(), since=0, budget=1)
    assert [r.url.path for r in ehr.requests if r.url.path.startswith("/fhir/")] == ["/fhir/Subscription/s1"]
    assert (spent.requests, spent.complete, spent.published) == (1, False, 0)  # the read took the whole budget
    done = await recovery.search(organization, tracked(), since=0, budget=2)
    assert (done.requests, done.complete, done.published) == (2, True, 5)  # the read, and one page
