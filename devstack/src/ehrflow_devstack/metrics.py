"""Reading a service's Prometheus metrics, as an operator's dashboard would."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(service_url: str, name: str, **labels: str) -> list[float]:
    """The values of ``name``'s samples whose labels include ``labels`` (none: the series does not exist)."""
    text = httpx.get(f"{service_url}/metrics", timeout=10).text
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def metric(service_url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none yet)."""
    return sum(samples(service_url, name, **labels))


def metric_reaches(service_url: str, name: str, value: float, *, timeout: float = 10.0, **labels: str) -> float:
    """Wait until the metric is at least ``value`` (counters some services update in the background);
    return what it is then, so a test can also check it did not overshoot."""
    deadline = time.monotonic() + timeout
    while (current := metric(service_url, name, **labels)) < value and time.monotonic() < deadline:
        time.sleep(0.1)
    return current
