"""Reading a service's Prometheus metrics, as an operator's dashboard would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric(service_url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none yet)."""
    text = httpx.get(f"{service_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
