"""What ingest knows about each subscription: liveness, event numbers, gaps (docs/design/notifications.md items 19, 24–27).

Pure functions over a small state record; ``tracking_store`` keeps the records in Redis.

- ``eventsSinceSubscriptionStart`` counts events up to and including the current notification (handshakes
  and heartbeats carry the count so far). Numbers that jump past the next expected one open a **gap**.
  A gap stays open for a grace period, because senders deliver out of order (an update before its create);
  a late event fills it. Past the grace period the worker recovers it.
- A counter that **goes down** is a sender restart (HAPI keeps counters in memory): a reset, not a gap.
  A heartbeat that lags an event already seen is just late and changes nothing.
- An empty classic ping means "something changed, go and look": it asks for a search since the last event.
- Status ``error`` or ``off`` in any notification is an alert; silence for 1.5 heartbeat periods is one too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel

Numbering = Literal["global", "bundle-relative", "none"]

SILENCE_FACTOR = 1.5
MAX_GAPS = 100
"""Open gaps kept per subscription. Beyond it the closest neighbours merge into one range: recovery then
asks for some numbers that did arrive (dedupe drops them again), and a sender that skips every other
number cannot grow the tracking record, which is read and rewritten on every notification, without end."""
ALERT_STATUSES = frozenset({"error", "off"})


def instant(value: object) -> float | None:
    """Epoch seconds of a FHIR instant or date as senders write them (7 fractional digits occur), else None;
    a time without a zone, or a bare date, is taken as UTC. (``datetime.fromisoformat`` reads every FHIR
    form since Python 3.11, in C: this runs for every event.)"""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def iso(epoch: float) -> str:
    """An instant for a FHIR search (``_lastUpdated=ge…``), in UTC with milliseconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Gap(BaseModel):
    first: int
    last: int
    opened_at: float
    since: float | None = None
    """Time of the last event seen before the gap: where a search recovery starts."""

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SubscriptionState(BaseModel):
    """One subscription as ingest sees it. Times are epoch seconds; ``last_seen`` is our clock,
    ``last_event_at`` the sender's own time for its latest event where it says, else our clock."""

    organization: str
    key: str
    name: str | None = None
    subscription: str | None = None
    flavour: str | None = None
    highest: int | None = None
    gaps: list[Gap] = []
    last_event_at: float | None = None
    last_seen: float | None = None
    status: str | None = None
    sweep_since: float | None = None
    sweep_requested_at: float | None = None
    resets: int = 0
    silent: bool = False


class Seen(NamedTuple):
    """What one accepted notification tells about its subscription (a tuple: one is made per notification,
    and a frozen dataclass is several times slower to make)."""

    notification_type: str
    status: str | None = None
    counter: int | None = None
    numbers: tuple[int | None, ...] = ()
    """Event numbers of the events published now (duplicates left out)."""
    carried: int = 0
    """How many events the notification carried, duplicates included."""
    ping: bool = False
    event_time: float | None = None
    subscription: str | None = None
    flavour: str | None = None


@dataclass
class Findings:
    gaps: list[Gap] = field(default_factory=list)
    reset: bool = False
    status_alert: str | None = None
    filled: int = 0


def observe(
    state: SubscriptionState, seen: Seen, now: float, *, numbering: Numbering = "global", lookback_s: float = 3600.0
) -> Findings:
    """Fold one notification into ``state`` (in place); say what it revealed."""
    findings = Findings()
    state.last_seen = now
    # Only what changes is set: this runs for every notification, and a model's attribute is slow to set.
    if seen.subscription and seen.subscription != state.subscription:
        state.subscription = seen.subscription
    if seen.flavour and seen.flavour != state.flavour:
        state.flavour = seen.flavour
    if state.silent:
        state.silent = False
    if seen.status:
        if seen.status != state.status:
            state.status = seen.status
        if seen.status in ALERT_STATUSES:
            findings.status_alert = seen.status
    if seen.ping:
        request_sweep(state, now, lookback_s=lookback_s)
    is_event = seen.notification_type in ("event-notification", "query-event")
    if is_event and seen.carried and not seen.numbers:
        return findings  # every event was a duplicate: a re-delivery says nothing new
    before = state.last_event_at
    if is_event and seen.numbers and not seen.ping:
        state.last_event_at = max(filter(None, (state.last_event_at, seen.event_time or now)))
    if numbering != "global":
        return findings
    numbers = [n for n in seen.numbers if n is not None]
    if is_event and not numbers and seen.counter is not None and seen.numbers:
        numbers = list(range(seen.counter - len(seen.numbers) + 1, seen.counter + 1))
    candidates = numbers + ([seen.counter] if seen.counter is not None else [])
    if not candidates:
        return findings
    if state.highest is None:
        state.highest = max(candidates)
        return findings
    rest = []
    for number in numbers:
        # Gaps lie at or below the highest number seen: only a late number can fill one, and an
        # in-order event (nearly all of them) skips the scan of the open gaps.
        if number <= state.highest and _fill(state, number):
            findings.filled += 1
        else:
            rest.append(number)
    peak = max(rest + ([seen.counter] if seen.counter is not None else []), default=None)
    if peak is None:
        return findings
    went_down = peak < state.highest
    if went_down and (rest or seen.notification_type == "handshake"):
        # The sender restarted its numbering. Open gaps belonged to the old numbering: search for them.
        if state.gaps:
            request_sweep(state, now, since=min((g.since for g in state.gaps if g.since), default=before))
        state.highest, state.gaps = peak, []
        state.resets += 1
        findings.reset = True
        return findings
    if peak > state.highest:
        for first, last in _missing(state.highest, peak, rest):
            gap = Gap(first=first, last=last, opened_at=now, since=before)
            state.gaps.append(gap)
            findings.gaps.append(gap)
        state.highest = peak
        if len(state.gaps) > MAX_GAPS:
            state.gaps = merged(state.gaps, MAX_GAPS)
    return findings


def merged(gaps: list[Gap], most: int) -> list[Gap]:
    """``gaps`` as at most ``most`` ranges, joining the neighbours with the fewest numbers between them.
    A merged gap opened and starts its search as early as the earliest of its parts."""
    ordered = sorted(gaps, key=lambda g: g.first)
    between = sorted(range(len(ordered) - 1), key=lambda i: ordered[i + 1].first - ordered[i].last)
    joins = set(between[: max(0, len(ordered) - most)])
    result: list[Gap] = []
    for index, gap in enumerate(ordered):
        if index - 1 in joins:
            last = result[-1]
            sinces = [s for s in (last.since, gap.since) if s is not None]
            result[-1] = Gap(
                first=last.first,
                last=max(last.last, gap.last),
                opened_at=min(last.opened_at, gap.opened_at),
                since=min(sinces) if sinces else None,
            )
        else:
            result.append(gap)
    return result


def request_sweep(
    state: SubscriptionState, now: float, *, since: float | None = None, lookback_s: float = 3600.0
) -> None:
    """Ask for a search of everything since ``since`` (default: the last event seen)."""
    start = since if since is not None else state.last_event_at
    if start is None:
        start = now - lookback_s
    state.sweep_since = start if state.sweep_since is None else min(state.sweep_since, start)
    state.sweep_requested_at = now


def _fill(state: SubscriptionState, number: int) -> bool:
    for index, gap in enumerate(state.gaps):
        if gap.first <= number <= gap.last:
            pieces = [
                Gap(first=a, last=b, opened_at=gap.opened_at, since=gap.since)
                for a, b in ((gap.first, number - 1), (number + 1, gap.last))
                if a <= b
            ]
            state.gaps[index : index + 1] = pieces
            return True
    return False


def _missing(highest: int, peak: int, carried: list[int]) -> list[tuple[int, int]]:
    """Ranges in (highest, peak] that ``carried`` does not hold; never enumerates the range itself,
    so a sender's absurd jump costs no more than a small one."""
    ranges: list[tuple[int, int]] = []
    cursor = highest + 1
    for number in sorted({n for n in carried if highest < n <= peak}):
        if number > cursor:
            ranges.append((cursor, number - 1))
        cursor = number + 1
    if cursor <= peak:
        ranges.append((cursor, peak))
    return ranges


@dataclass(frozen=True)
class Due:
    gaps: tuple[Gap, ...] = ()
    sweep_since: float | None = None
    fell_silent: bool = False

    @property
    def anything(self) -> bool:
        return bool(self.gaps) or self.sweep_since is not None


def due(state: SubscriptionState, now: float, *, grace_s: float, heartbeat_s: float | None) -> Due:
    """What the recovery worker should do for this subscription now."""
    ripe = tuple(g for g in state.gaps if now - g.opened_at >= grace_s)
    silent = bool(heartbeat_s and state.last_seen is not None and now - state.last_seen > SILENCE_FACTOR * heartbeat_s)
    return Due(gaps=ripe, sweep_since=state.sweep_since, fell_silent=silent and not state.silent)
