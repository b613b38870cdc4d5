"""Parsing notifications as real senders write them (docs/design/notifications.md items 15–18, 20, 22)."""

from __future__ import annotations

import json

import pytest

from ehrflow_devstack import samples
from ehrflow_ingest.notifications import NotificationError, dedupe_key, event_patient, parse_topic_notification
from ehrflow_ingest.references import normalize


def test_r4_backport_full_resource() -> None:
    note = parse_topic_notification(samples.r4_backport())
    assert (note.flavour, note.notification_type, note.content_level) == (
        "r4-backport",
        "event-notification",
        "full-resource",
    )
    assert note.subscription == "Subscription/sub-1"
    assert note.events_since_subscription_start == 1
    [event] = note.events
    assert (event.event_number, event.focus) == (1, "Observation/obs-1")
    assert event.focus_original == f"{samples.BASE}/Observation/obs-1"
    assert event.resource and event.resource["id"] == "obs-1"
    assert event_patient(event) == "Patient/p1"


def test_r4_backport_id_only_and_empty() -> None:
    id_only = parse_topic_notification(samples.r4_backport(content="id-only"))
    assert id_only.content_level == "id-only" and id_only.events[0].resource is None
    assert event_patient(id_only.events[0]) == "Patient/p1"  # from additional-context
    empty = parse_topic_notification(samples.r4_backport(content="empty"))
    assert empty.content_level == "empty" and empty.events[0].focus is None and empty.events[0].event_number == 1


def test_handshake_and_heartbeat_carry_no_events() -> None:
    for kind in ("handshake", "heartbeat"):
        note = parse_topic_notification(samples.r4_backport(kind, status="requested"))
        assert note.notification_type == kind and note.events == ()


def test_r4b_and_r5_subscription_status() -> None:
    r4b = parse_topic_notification(samples.subscription_status_bundle())
    r5 = parse_topic_notification(samples.subscription_status_bundle(r5=True))
    assert (r4b.flavour, r5.flavour) == ("r4b-backport", "r5")
    assert r5.events[0].event_number == 7 and r5.events[0].resource is not None


def test_several_events_in_one_bundle() -> None:
    body = samples.r4_backport(events=[(4, samples.observation("a")), (5, samples.observation("b"))])
    note = parse_topic_notification(body)
    assert [(e.event_number, e.focus) for e in note.events] == [(4, "Observation/a"), (5, "Observation/b")]


def test_counters_as_numbers_or_strings() -> None:
    body = samples.r4_backport(events=[(" 12 ", samples.observation())], since=12)
    body["entry"][0]["resource"]["parameter"][4] = {"name": "eventsSinceSubscriptionStart", "valueInteger": 12}
    note = parse_topic_notification(body)
    assert note.events_since_subscription_start == 12 and note.events[0].event_number == 12


def test_subscription_as_value_string_and_type_as_string() -> None:
    body = samples.r4_backport()
    params = body["entry"][0]["resource"]["parameter"]
    params[0] = {"name": "subscription", "valueString": "Subscription/abc"}
    params[3] = {"name": "type", "valueString": "event-notification"}
    note = parse_topic_notification(body)
    assert note.subscription == "Subscription/abc"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceType": "Patient"}, "expected a FHIR Bundle"),
        ({"resourceType": "Bundle", "type": "history", "entry": []}, "entry[0]"),
        (
            {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Parameters"}}]},
            "not a subscription notification",
        ),
        ([1, 2], "expected a FHIR Bundle"),
    ],
)
def test_bad_shapes_get_precise_messages(body: object, message: str) -> None:
    with pytest.raises(NotificationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_topic_notification(body)


def test_unknown_notification_type() -> None:
    body = samples.r4_backport()
    body["entry"][0]["resource"]["parameter"][3] = {"name": "type", "valueCode": "gossip"}
    with pytest.raises(NotificationError, match="gossip"):
        parse_topic_notification(body)


def test_non_integer_counter() -> None:
    with pytest.raises(NotificationError, match="not an integer"):
        parse_topic_notification(samples.r4_backport(events=[("seven", samples.observation())], since=1))


@pytest.mark.parametrize(
    ("reference", "normalized"),
    [
        ("Encounter/123", "Encounter/123"),
        ("https://host/fhir/Encounter/123", "Encounter/123"),
        ("https://host/fhir/Encounter/123/_history/2", "Encounter/123"),
        ("urn:uuid:7c3b1a3e-0000-4000-8000-000000000000", None),
        ("http://hospital/mrn|12345", None),
        (None, None),
    ],
)
def test_reference_normalization(reference: str | None, normalized: str | None) -> None:
    assert normalize(reference) == normalized


def test_dedupe_key_precedence() -> None:
    raw = json.dumps(samples.r4_backport()).encode()
    note = parse_topic_notification(json.loads(raw))
    event = note.events[0]
    by_number = dedupe_key("org1", note, event, raw)
    # Re-sent with a new Bundle id and a new status fullUrl: still the same event.
    again = samples.r4_backport()
    assert (
        dedupe_key("org1", parse_topic_notification(again), parse_topic_notification(again).events[0], b"") == by_number
    )
    assert dedupe_key("org2", note, event, raw) != by_number  # never shared across organizations
    without_sub = parse_topic_notification(samples.r4_backport())._replace(subscription=None)
    by_version = dedupe_key("org1", without_sub, without_sub.events[0], raw)
    assert by_version != by_number
    bumped = samples.r4_backport(events=[(1, samples.observation(version="2"))])
    bumped_note = parse_topic_notification(bumped)._replace(subscription=None)
    assert dedupe_key("org1", bumped_note, bumped_note.events[0], raw) != by_version


def test_after_a_sender_restart_a_repeated_event_number_is_a_new_event() -> None:
    """Item 25: HAPI numbers from 1 again after a restart; the new event 1 is not the old event 1."""

    def key(body: dict[str, object]) -> str:
        note = parse_topic_notification(body)
        return dedupe_key("org1", note, note.events[0], b"")

    before = key(samples.r4_backport(events=[(1, samples.observation("a"))]))
    assert key(samples.r4_backport(events=[(1, samples.observation("a"))])) == before  # a re-delivery
    assert key(samples.r4_backport(events=[(1, samples.observation("b"))])) != before  # after a restart
    assert key(samples.r4_backport(events=[(1, samples.observation("a", version="2"))])) != before


@pytest.mark.parametrize("odd", [1, "x", {"a": 1}, None])
def test_scalars_where_lists_belong_are_ignored_not_a_crash(odd: object) -> None:
    """Found by fuzzing: ``"part": 1`` in a notification-event raised TypeError (500)."""
    body = samples.r4_backport()
    body["entry"][0]["resource"]["parameter"][5]["part"] = odd
    assert parse_topic_notification(body).events[0].event_number is None
    status = samples.subscription_status_bundle()
    status["entry"][0]["resource"]["notificationEvent"] = odd
    parse_topic_notification(status)


def test_odd_json_types_are_a_precise_error_not_a_crash() -> None:
    """Found by fuzzing: a list where the notification type belongs used to raise TypeError (500)."""
    body = samples.r4_backport()
    body["entry"][0]["resource"]["parameter"][3] = {"name": "type", "value": []}
    with pytest.raises(NotificationError, match="notification type"):
        parse_topic_notification(body)
    odd = samples.r4_backport()
    odd["entry"][0]["resource"]["parameter"][1] = {"name": "topic", "valueCanonical": {"not": "a string"}}
    odd["entry"][0]["resource"]["parameter"][2] = {"name": "status", "valueCode": 7}
    note = parse_topic_notification(odd)
    assert (note.topic, note.status) == (None, None)
