"""Ingest's Prometheus metrics, defined once (served at ``/metrics``).

Labels are organization ids, declared subscription names and small fixed vocabularies: never a
patient, a resource id or anything a sender controls freely.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Gauge

from ehrflow_runtime.hot_metrics import CounterSeries, HistogramSeries, HotCounter, HotHistogram

# Every notification updates these three: plain numbers read at scrape time (ehrflow_runtime.hot_metrics).
RECEIVED = HotCounter(
    "ehrflow_ingest_notifications_total", "Notifications by organization and outcome", ["organization", "outcome"]
)
LATENCY = HotHistogram(
    "ehrflow_ingest_request_seconds",
    "Time from request to answer, by outcome",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)


@lru_cache(maxsize=4096)
def received(organization: str, outcome: str) -> CounterSeries:
    """``RECEIVED``'s series for one organization and outcome, looked up once (every notification counts)."""
    return RECEIVED.labels(organization, outcome)


@lru_cache(maxsize=64)
def latency(status: int) -> HistogramSeries:
    """``LATENCY``'s series for one answer status."""
    return LATENCY.labels(str(status))


EVENTS = HotCounter("ehrflow_ingest_events_published_total", "Events published", ["organization", "kind"])


@lru_cache(maxsize=1024)
def published(organization: str, kind: str) -> CounterSeries:
    """``EVENTS``'s series for one organization and kind, looked up once."""
    return EVENTS.labels(organization, kind)


DUPLICATES = Counter(
    "ehrflow_ingest_duplicates_total", "Duplicate events answered 200 and not published", ["organization"]
)
DEDUPE_SKIPPED = Counter(
    "ehrflow_ingest_dedupe_skipped_total", "Events published without dedupe (Redis down)", ["organization"]
)
ECHOES = Counter("ehrflow_ingest_echoes_dropped_total", "Echoes of ehrflow's own writes dropped", ["organization"])

GAPS = Counter("ehrflow_ingest_gaps_total", "Gaps in a subscription's event numbers", ["organization"])
MISSING = Counter("ehrflow_ingest_missing_events_total", "Event numbers missing in gaps", ["organization"])
RESETS = Counter(
    "ehrflow_ingest_counter_resets_total", "Event counters that went down (the sender restarted)", ["organization"]
)
STATUS_ALERTS = Counter(
    "ehrflow_ingest_subscription_status_alerts_total",
    "Notifications reporting a subscription in error or off",
    ["organization", "status"],
)
SILENT = Gauge(
    "ehrflow_ingest_subscription_silent",
    "1 while a subscription has sent nothing for 1.5 heartbeat periods",
    ["organization", "subscription"],
)
RECOVERIES = Counter(
    "ehrflow_ingest_recoveries_total",
    "Recovery queries by method ($events, search) and outcome",
    ["organization", "method", "outcome"],
)
RECOVERED = Counter("ehrflow_ingest_recovered_events_total", "Events published by recovery", ["organization"])
TRACKING_SKIPPED = Counter(
    "ehrflow_ingest_tracking_skipped_total",
    "Notifications not tracked for gaps (Redis down, or too many sender-named subscriptions)",
    ["organization"],
)

MANAGED_ACTIVE = Gauge(
    "ehrflow_ingest_managed_subscription_active",
    "1 when a declared subscription is active on the EHR",
    ["organization", "subscription"],
)
REACTIVATIONS = Counter(
    "ehrflow_ingest_subscription_reactivations_total",
    "Declared subscriptions created or re-activated on the EHR",
    ["organization", "action"],
)
