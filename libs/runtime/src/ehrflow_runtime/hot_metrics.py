"""Prometheus counters and histograms for code that runs for every request, read at scrape time.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock and make several Python calls
each; ingest updates three series per notification, which came to ~2 % of its instructions per
notification (in-process 648.9k → 634.5k with these; docs/benchmarks.md). A service runs on one event loop, so a series here is a plain number
that the request adds to, and ``collect`` (prometheus_client's custom collector protocol) turns the
numbers into the same exposition at scrape time: same names, labels, buckets, ``_sum`` and ``_count``.

Increments must come from one thread (the event loop's); a scrape from another thread reads a snapshot.
Metrics updated rarely stay prometheus_client's own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

S = TypeVar("S")

_bucket_label: Callable[[float], str] = floatToGoString  # how prometheus_client writes ``le`` (0.005, 1.0, +Inf)


class CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class HistogramSeries:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket (not cumulative); the last one is above every bound (+Inf)."""
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1  # the first bound >= value: Prometheus' ``le``
        self.sum += value


class _HotMetric(Collector, Generic[S]):
    """What a hot counter and a hot histogram share: a name, labels, a series per label values."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry | None
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> S:
        """The series for these label values (callers keep it: looking it up is the slow part)."""
        if (series := self._series.get(values)) is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}")
            series = self._series[values] = self._new_series()
        return series

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _new_series(self) -> S:
        raise NotImplementedError

    def _family(self) -> CounterMetricFamily | HistogramMetricFamily:
        raise NotImplementedError


class HotCounter(_HotMetric[CounterSeries]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, series in list(self._series.items()):
            family.add_metric(values, series.value)
        yield family

    def _new_series(self) -> CounterSeries:
        return CounterSeries()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)


class HotHistogram(_HotMetric[HistogramSeries]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("buckets must be increasing")
        self._bounds = bounds
        self._les = tuple(_bucket_label(b) for b in (*bounds, float("inf")))
        super().__init__(name, documentation, labelnames, registry)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum  # a snapshot: a scrape may race an observation
            cumulative, buckets = 0, []
            for le, count in zip(self._les, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(values, buckets, total)
        yield family

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
