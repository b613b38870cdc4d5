"""The hot-path series expose exactly what prometheus_client's own Counter and Histogram would."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ehrflow_runtime.hot_metrics import HotCounter, HotHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition without prometheus_client's ``_created`` timestamps (which ours do not have)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["org1", "org2", "org-3"]), st.sampled_from(["accepted", "rejected"]), st.integers(1, 5)
        )
    )
)
def test_counter_exposition_matches_prometheus_client(increments: list[tuple[str, str, int]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("demo_notifications_total", "Notifications", ["organization", "outcome"], registry=ours)
    reference = Counter("demo_notifications_total", "Notifications", ["organization", "outcome"], registry=theirs)
    for org, outcome, amount in increments:
        hot.labels(org, outcome).inc(amount)
        reference.labels(org, outcome).inc(amount)
    assert sorted(exposition(ours)) == sorted(exposition(theirs))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["200", "400", "503"]),
            st.one_of(st.sampled_from(BUCKETS), st.floats(0, 10, allow_nan=False)),  # bounds themselves too
        )
    )
)
def test_histogram_exposition_matches_prometheus_client(observations: list[tuple[str, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("demo_request_seconds", "Latency", ["outcome"], buckets=BUCKETS, registry=ours)
    reference = Histogram("demo_request_seconds", "Latency", ["outcome"], buckets=BUCKETS, registry=theirs)
    for outcome, seconds in observations:
        hot.labels(outcome).observe(seconds)
        reference.labels(outcome).observe(seconds)
    assert sorted(exposition(ours)) == sorted(exposition(theirs))


def test_series_are_kept_per_label_values() -> None:
    registry = CollectorRegistry()
    counter = HotCounter("demo_total", "Demo", ["organization"], registry=registry)
    counter.labels("org1").inc()
    counter.labels("org1").inc(2)
    counter.labels("org2").inc()
    assert registry.get_sample_value("demo_total", {"organization": "org1"}) == 3
    assert registry.get_sample_value("demo_total", {"organization": "org2"}) == 1


def test_misuse_is_refused() -> None:
    registry = CollectorRegistry()
    counter = HotCounter("demo_total", "Demo", ["organization", "outcome"], registry=registry)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("org1")
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("org1", "accepted").inc(-1)
    with pytest.raises(ValueError, match="increasing"):
        HotHistogram("demo_seconds", "Demo", [], buckets=(1.0, 0.5), registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):  # the registry still refuses a second metric of a name
        HotCounter("demo_total", "Demo again", ["organization", "outcome"], registry=registry)
