"""Gaps, resets, late arrivals, pings, statuses and silences (docs/design/notifications.md items 19, 24–27)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ehrflow_ingest.tracking import MAX_GAPS, Gap, Seen, SubscriptionState, due, instant, iso, merged, observe


def state() -> SubscriptionState:
    return SubscriptionState(organization="org1", key="ref:Subscription/s1")


def event(number: int | None, counter: int | None = None, **kw: object) -> Seen:
    return Seen(
        notification_type="event-notification",
        counter=number if counter is None else counter,
        numbers=(number,),
        carried=1,
        **kw,  # type: ignore[arg-type]
    )


def test_numbers_1_2_5_open_one_gap_for_3_to_4() -> None:
    s = state()
    findings = [observe(s, event(n), now=100.0 + n) for n in (1, 2, 5)]
    assert [f.gaps for f in findings[:2]] == [[], []]
    [gap] = findings[2].gaps
    assert (gap.first, gap.last, gap.size) == (3, 4, 2)
    assert gap.since == 102.0  # the last event before the gap: where a search starts
    assert s.highest == 5


def test_a_late_delivery_fills_its_gap_and_is_not_a_reset() -> None:
    s = state()
    for n in (1, 2, 5):
        observe(s, event(n), now=1.0)
    late = observe(s, event(3), now=2.0)
    assert (late.filled, late.reset) == (1, False)
    assert [(g.first, g.last) for g in s.gaps] == [(4, 4)]
    observe(s, event(4), now=3.0)
    assert s.gaps == [] and s.highest == 5


def test_a_counter_that_goes_down_is_a_reset_not_a_gap() -> None:
    s = state()
    for n in (7, 8, 9):
        observe(s, event(n), now=1.0)
    findings = observe(s, event(1), now=2.0)
    assert findings.reset and findings.gaps == []
    assert (s.highest, s.resets) == (1, 1)
    assert observe(s, event(2), now=3.0).gaps == []


def test_a_reset_turns_open_gaps_into_a_search() -> None:
    s = state()
    observe(s, event(1, event_time=50.0), now=1.0)
    observe(s, event(4, event_time=60.0), now=2.0)
    assert s.gaps
    observe(s, event(1), now=3.0)
    assert s.gaps == [] and s.sweep_since == 50.0


def test_a_late_heartbeat_changes_nothing_but_a_higher_one_reveals_missed_events() -> None:
    s = state()
    for n in (1, 2, 3):
        observe(s, event(n), now=1.0)
    stale = observe(s, Seen("heartbeat", counter=2), now=2.0)
    assert not stale.reset and not stale.gaps and s.highest == 3
    ahead = observe(s, Seen("heartbeat", counter=6), now=3.0)
    assert [(g.first, g.last) for g in ahead.gaps] == [(4, 6)]


def test_a_handshake_that_starts_again_at_zero_is_a_reset() -> None:
    s = state()
    observe(s, event(4), now=1.0)
    assert observe(s, Seen("handshake", status="requested", counter=0), now=2.0).reset


def test_events_without_numbers_are_numbered_from_the_counter() -> None:
    s = state()
    observe(s, event(None, counter=1), now=1.0)
    bundle = Seen("event-notification", counter=6, numbers=(None, None), carried=2)
    assert [(g.first, g.last) for g in observe(s, bundle, now=2.0).gaps] == [(2, 4)]


def test_a_redelivery_of_duplicates_only_says_nothing_about_numbers() -> None:
    s = state()
    for n in (5, 6):
        observe(s, event(n), now=1.0)
    duplicate = Seen("event-notification", counter=2, numbers=(), carried=1)
    assert observe(s, duplicate, now=2.0) == observe(state(), Seen("heartbeat"), now=2.0)
    assert s.highest == 6 and s.last_seen == 2.0


@pytest.mark.parametrize("numbering", ["bundle-relative", "none"])
def test_senders_without_global_numbers_never_show_gaps(numbering: str) -> None:
    s = state()
    findings = [observe(s, event(n), now=1.0, numbering=numbering) for n in (1, 1, 5, 2)]  # type: ignore[arg-type]
    assert not any(f.gaps or f.reset for f in findings)


def test_an_empty_ping_asks_for_a_search_since_the_last_event() -> None:
    s = state()
    observe(s, event(1, event_time=1000.0), now=1001.0)
    ping = Seen("event-notification", numbers=(None,), carried=1, ping=True, flavour="r4-classic")
    observe(s, ping, now=2000.0)
    assert s.sweep_since == 1000.0 and s.sweep_requested_at == 2000.0
    assert s.last_event_at == 1000.0  # the ping itself is not an event we have
    observe(s, ping, now=3000.0)
    assert s.sweep_since == 1000.0  # pings coalesce into one search from the oldest point


def test_first_ping_without_history_looks_back_a_bounded_time() -> None:
    s = state()
    observe(s, Seen("event-notification", numbers=(None,), carried=1, ping=True), now=10_000.0, lookback_s=600)
    assert s.sweep_since == 9_400.0


@pytest.mark.parametrize(
    ("status", "alert"), [("error", "error"), ("off", "off"), ("active", None), ("requested", None)]
)
def test_status_error_or_off_in_any_notification_is_an_alert(status: str, alert: str | None) -> None:
    assert observe(state(), Seen("heartbeat", status=status), now=1.0).status_alert == alert


def test_gaps_are_due_after_the_grace_period_only() -> None:
    s = state()
    for n in (1, 2, 5):
        observe(s, event(n), now=100.0)
    assert due(s, 110.0, grace_s=30, heartbeat_s=None).gaps == ()
    assert [(g.first, g.last) for g in due(s, 130.0, grace_s=30, heartbeat_s=None).gaps] == [(3, 4)]


def test_silence_for_one_and_a_half_heartbeats_is_reported_once() -> None:
    s = state()
    observe(s, Seen("heartbeat", counter=0), now=100.0)
    assert not due(s, 189.0, grace_s=0, heartbeat_s=60).fell_silent
    assert due(s, 191.0, grace_s=0, heartbeat_s=60).fell_silent
    s.silent = True
    assert not due(s, 300.0, grace_s=0, heartbeat_s=60).fell_silent
    observe(s, Seen("heartbeat", counter=0), now=301.0)
    assert not s.silent
    assert not due(s, 301.0, grace_s=0, heartbeat_s=None).fell_silent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-08-30T16:59:28.7896182+00:00", datetime(2023, 8, 30, 16, 59, 28, 789618, UTC)),
        ("2023-08-30T16:59:28Z", datetime(2023, 8, 30, 16, 59, 28, tzinfo=UTC)),
        ("2023-08-30T18:59:28.5+02:00", datetime(2023, 8, 30, 16, 59, 28, 500000, UTC)),
        ("2023-08-30", datetime(2023, 8, 30, tzinfo=UTC)),
    ],
)
def test_instants_as_senders_write_them(text: str, expected: datetime) -> None:
    assert instant(text) == expected.timestamp()


@pytest.mark.parametrize("text", [None, 5, "", "yesterday", "2023-13-40T99:00:00Z"])
def test_unreadable_instants_are_none(text: object) -> None:
    assert instant(text) is None


def test_iso_round_trips_for_searches() -> None:
    assert iso(instant("2026-11-21T08:41:36.536Z") or 0) == "2026-11-21T08:41:36.536Z"


def test_an_absurd_jump_is_one_gap_computed_without_enumerating_it() -> None:
    """Found by the benchmark: a jump of 10^12 used to build a list of every missing number (out of memory)."""
    s = state()
    observe(s, event(1), now=1.0)
    bundle = Seen("event-notification", counter=10**12 + 3, numbers=(10**12, 10**12 + 2), carried=2)
    gaps = observe(s, bundle, now=2.0).gaps
    assert [(g.first, g.last) for g in gaps] == [(2, 10**12 - 1), (10**12 + 1, 10**12 + 1), (10**12 + 3, 10**12 + 3)]


@given(
    st.lists(st.integers(2, 40), unique=True),
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40)), max_size=5),
)
@example(later=[3], heartbeats=[(0, 3)])  # the counter reveals 2 and 3; event 3 then fills the gap's top end
def test_open_gaps_are_exactly_the_numbers_revealed_and_not_yet_seen(
    later: list[int], heartbeats: list[tuple[int, int]]
) -> None:
    """Events 1, then the others in any order, with heartbeats whose counters reveal numbers ahead of them:
    whatever the order, the open gaps are every number up to the highest that no event has brought."""
    s = state()
    arrivals: list[Seen] = [event(n) for n in later]
    for position, counter in heartbeats:
        arrivals.insert(position, Seen("heartbeat", counter=counter))
    for seen in [event(1), *arrivals]:
        assert not observe(s, seen, now=1.0).reset
    events = {1, *later}
    highest = max(events | {counter for _, counter in heartbeats})
    assert s.highest == highest
    open_numbers = [n for g in s.gaps for n in range(g.first, g.last + 1)]
    assert sorted(open_numbers) == sorted(set(range(1, highest + 1)) - events)


def test_a_sender_skipping_every_other_number_cannot_grow_the_open_gaps_without_end() -> None:
    """Odd numbers only (1, 3, 5 …) opened a gap per event: 20,000 of them in one record read and rewritten
    on every notification. Beyond MAX_GAPS the closest neighbours merge into ranges that still cover every
    missing number."""
    s = state()
    observe(s, event(1), now=1.0)
    odd = tuple(range(3, 2 * 1000, 2))
    findings = observe(
        s,
        Seen(notification_type="event-notification", counter=odd[-1], numbers=odd, carried=len(odd)),
        now=2.0,
    )
    assert len(findings.gaps) == len(odd)  # what this notification revealed, reported (once: tracker.report)
    assert len(s.gaps) == MAX_GAPS
    missing = {n for n in range(2, odd[-1]) if n % 2 == 0}
    assert all(any(g.first <= n <= g.last for g in s.gaps) for n in missing)
    assert [g.first for g in s.gaps] == sorted(g.first for g in s.gaps)
    assert all(a.last < b.first for a, b in zip(s.gaps, s.gaps[1:], strict=False))


def test_merging_joins_the_closest_neighbours_and_keeps_the_earliest_times() -> None:
    gaps = [
        Gap(first=2, last=2, opened_at=5, since=1),
        Gap(first=4, last=4, opened_at=3, since=2),
        Gap(first=100, last=110, opened_at=1, since=3),
    ]
    assert [(g.first, g.last, g.opened_at, g.since) for g in merged(gaps, 2)] == [(2, 4, 3, 1), (100, 110, 1, 3)]
    assert merged(gaps, 3) == gaps
